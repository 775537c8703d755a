"""The user's files, read without TensorFlow: .npy arrays, the writer of a .keras file,
whether an output can be written; files written whole (`written_whole`, `write_json`).

Each failure is one `checks.InputError` line naming the file: a missing or unreadable
.npy file (cut short, another format), an output that cannot be written (checked
before a long computation, not after it). `keras_writer` names the tfvae that wrote a
.keras file, for the one line that refuses a file of another version
(`keras_files.load_keras_model`, `tools.upgrade`). Needs only numpy, as `checks` does.
"""

import contextlib
import hashlib
import json
import os
import pickle
import zipfile

import numpy as np

from tfvae.checks import InputError, first_line


def load_npy(path):
    """The array in the .npy file `path`; InputError if it is missing or unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist.") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise InputError(f"{path} cannot be read as a .npy array "
                         f"(cut short or another format: {first_line(error)}).") from None


def check_writable(path, flag="--output"):
    """InputError now, not after a long computation, when `path` cannot be written."""
    if not path:
        return
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise InputError(f"{flag} {path} cannot be written "
                         f"({first_line(error)}).") from None
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise InputError(f"{flag} {path} cannot be written.")


PARTIAL = ".partial"
KERAS_PARTIAL = ".saving.keras"  # Keras writes only to names that end in .keras


@contextlib.contextmanager
def written_whole(path, suffix=PARTIAL):
    """Yields a neighbour of `path` to write; when the block ends it is renamed over
    `path`, or removed if the block raised: a kill leaves the old file or the new one,
    never half of one."""
    partial = f"{path}{suffix}"
    try:
        yield partial
        os.replace(partial, path)
    finally:
        if os.path.exists(partial):
            os.remove(partial)


def save_model_whole(model, path):
    """`model.save(path)`, whole (`written_whole`): Keras writes its archive in place,
    so a kill mid-save would leave half of one."""
    with written_whole(path, KERAS_PARTIAL) as partial:
        model.save(partial, overwrite=True)


def write_json(path, value):
    """Writes `value` as JSON to `path` whole (`written_whole`)."""
    with written_whole(path) as partial, open(partial, "w") as f:
        json.dump(value, f, indent=2, default=str)


def content_digest(path, block_bytes=1 << 20):
    """SHA-256 (hex) of the contents of the file `path`, or of a folder's files (their
    relative names and contents, in sorted order): the same for a copy, a clone or a
    move, unlike a path or a modification time."""
    digest = hashlib.sha256()
    if os.path.isdir(path):
        names = sorted(os.path.relpath(os.path.join(folder, name), path)
                       for folder, _, files in os.walk(path) for name in files)
        files = [(name.replace(os.sep, "/"), os.path.join(path, name)) for name in names]
    else:
        files = [("", path)]
    for name, file in files:
        digest.update(name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(block_bytes), b""):
                digest.update(block)
    return digest.hexdigest()


def keras_writer(path):
    """Which tfvae wrote the .keras file `path`, in words: "tfvae 0.2.0" from the
    version its VAE config records (since 0.2.0), else "tfvae before 0.2.0 (no
    version recorded; saved <date>)". None when `path` is not an intact .keras
    archive of a tfvae model."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            saved = json.loads(archive.read("metadata.json")).get("date_saved", "?")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None
    if not (isinstance(config, dict) and str(config.get("module")).startswith("tfvae")):
        return None
    version = (config.get("config") or {}).get("tfvae_version")
    if version:
        return f"tfvae {version}"
    return f"tfvae before 0.2.0 (no version recorded; saved {saved})"
