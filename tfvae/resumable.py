"""Per-batch results kept on disk, so that a long evaluation resumes after a kill.

A k=1000 NLL of 10,000 images by a deep model takes hours on a CPU: longer than a
working session. Each batch's estimates depend only on the batch's images and its
index (the sampler's seed is [seed, index]), so the batches already done can be kept
and skipped on the next call. The file holds the results by batch index and a key
(the model, the data, k, the batch size, the seed: whatever the caller names); a call
with another key refuses to mix them. It is written whole or not at all (a temporary
file, then a rename), at most once every `every_s` seconds and at the end, and the
caller deletes it when the whole result is written.
"""

import json
import os
import time
import zipfile

import numpy as np

from tfvae import user_files


class BatchResults:
    """Results [n] of numbered batches, kept in `path` (a .npz) under `key`.

    Args:
        path: the file; None keeps nothing on disk.
        key: a JSON-serializable description of the computation.
        every_s: the least time between two writes.
    """

    def __init__(self, path, key, every_s=60.0):
        self.path, self.every_s = path, float(every_s)
        self.key = json.dumps(key, sort_keys=True)
        self.done, self.seconds = {}, 0.0
        self._written = time.monotonic()
        if path and os.path.exists(path):
            self._read()

    def _read(self):
        try:
            with np.load(self.path) as stored:
                key, seconds = str(stored["key"]), float(stored["seconds"])
                done = {int(name[6:]): stored[name] for name in stored.files
                        if name.startswith("batch_")}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{self.path} (the partial results of an earlier call) "
                             f"cannot be read ({error}); delete it to start over.") from None
        if key != self.key:
            raise ValueError(f"{self.path} holds the partial results of another "
                             f"computation ({key}); delete it, or give another output.")
        self.done, self.seconds = done, seconds

    def add(self, index, values, seconds):
        """Keep batch `index`'s values, which took `seconds`; write now and then."""
        self.done[int(index)] = np.asarray(values)
        self.seconds += float(seconds)
        if self.path and time.monotonic() - self._written >= self.every_s:
            self.write()

    def write(self):
        with user_files.written_whole(self.path, ".writing") as partial, \
                open(partial, "wb") as f:
            np.savez(f, key=np.array(self.key), seconds=np.array(self.seconds),
                     **{f"batch_{index}": values for index, values in self.done.items()})
        self._written = time.monotonic()

    def delete(self):
        if self.path and os.path.exists(self.path):
            os.remove(self.path)
