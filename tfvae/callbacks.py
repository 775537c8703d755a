"""Keras callbacks for training a VAE: divergence guard, backups, images, timing.

* `NonFiniteGuard` stops `fit` at the first batch whose loss is NaN or Inf (or at an
  epoch whose validation loss is), and voids that epoch's logs (all NaN) so that no
  later callback takes the diverged weights for the best ones. Put it first.
* `BestCheckpoint` saves the model of each epoch that beats the best validation value
  so far (never one whose value is missing or not finite), whole or not at all, and
  records which epoch and value the file holds (best.json) for a resumed run.
* `Backup` is `keras.callbacks.BackupAndRestore` that says when it resumes, never
  saves weights after a non-finite loss (the last good backup survives), keeps the
  backup when training diverged, and turns an unreadable backup into one clear error.
  Under multi-worker training every worker restores its own backup; workers that
  resumed different steps (one fell back to its previous copy) stop with one error
  instead of training on with different weights.
* `ImageGrid` writes prior samples and reconstructions to TensorBoard each epoch.
* `EpochTimer` adds `epoch_time_s` (training part of the epoch, without validation)
  and `images_per_s` to the epoch logs; put it before the loggers.
* `BoundCurve` estimates the ELBO of fixed train and test images (and, optionally,
  the test log p(x)) at log-spaced numbers of training examples seen, as Kingma &
  Welling's Figures 2 and 3 plot them, one CSV row per point (`log_spaced`).
"""

import csv
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfvae import checks, evaluate, rundir, user_files
from tfvae.model import in_multi_worker_mode


def _finite(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True  # Not a number: nothing to judge.


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training when the loss stops being finite.

    After `fit`, `diverged` is None or a dict with the `epoch` (0-based), `batch`
    and `loss` at which training stopped. `epoch` is the (0-based) epoch in progress.
    """

    def __init__(self):
        super().__init__()
        self.diverged = None
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if self.diverged is None and loss is not None and not _finite(loss):
            self.diverged = {"epoch": self.epoch, "batch": int(batch), "loss": float(loss)}
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        for key in ("loss", "val_loss"):
            if logs is not None and self.diverged is None and not _finite(
                    logs.get(key, 0)):
                self.diverged = {"epoch": epoch, "batch": None, "loss": float(logs[key]),
                                 "key": key}
                self.model.stop_training = True
        if logs is not None and self.diverged is not None:
            for key in logs:  # Later callbacks see this epoch as void.
                logs[key] = float("nan")


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model at each epoch whose `monitor` beats the best so far ("max" or
    "min" `mode`); an epoch whose value is missing, NaN or Inf is never saved.

    The file appears whole: the model is written beside it and renamed over it, then
    `record_path` (best.json) says which epoch and value it holds. A resumed run
    passes that as `initial_best`: its history.csv has dropped the epochs it trains
    again, and best.keras may hold one of them.

    `best` and `best_epoch` (1-based, None before the first save) say what the file
    holds.
    """

    def __init__(self, filepath, monitor, mode="max", initial_best=None,
                 record_path=None, verbose=0):
        super().__init__()
        checks.choice("mode", mode, ("max", "min"))
        self.filepath, self.monitor, self.record_path = filepath, monitor, record_path
        self.sign, self.verbose = (1.0 if mode == "max" else -1.0), verbose
        self.best_epoch, self.best = initial_best or (None, None)

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not _finite(value):
            return
        value, epoch = float(value), epoch + 1
        if self.best is not None and self.sign * (value - self.best) <= 0:
            self._say(f"Epoch {epoch}: {self.monitor} did not improve from "
                      f"{self.best:.5f}")
            return
        self._say(f"Epoch {epoch}: {self.monitor} improved from "
                  f"{'None' if self.best is None else f'{self.best:.5f}'} to "
                  f"{value:.5f}, saving model to {self.filepath}")
        user_files.save_model_whole(self.model, self.filepath)
        self.best, self.best_epoch = value, epoch
        if self.record_path:
            user_files.write_json(self.record_path, {
                "epoch": epoch, "monitor": self.monitor, "value": value})

    def _say(self, message):
        if self.verbose:
            print(f"\n{message}", flush=True)


class History(keras.callbacks.CSVLogger):
    """`CSVLogger` of history.csv that, when a run resumes from its backup (`append`),
    first drops the epochs logged after that backup: they are trained again."""

    def on_train_begin(self, logs=None):
        if self.append:  # after `Backup.on_train_begin` restored the epoch
            rundir.drop_history_from(self.filename, self.model._initial_epoch or 0)
        super().on_train_begin(logs)


class BackupError(RuntimeError):
    """Neither the latest backup nor the previous copy can be read."""


class Backup(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` that logs resumption and never backs up diverged weights."""

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=True,
                 delete_checkpoint=True):
        super().__init__(backup_dir, save_freq=save_freq,
                         double_checkpoint=double_checkpoint,
                         delete_checkpoint=delete_checkpoint)
        self.resumed_from = None
        self._diverged = False

    def _read_metadata(self):
        with open(self._training_metadata_path) as f:
            return json.load(f)

    def on_train_begin(self, logs=None):
        self._restore()
        self._check_workers_agree()

    def _restore(self):
        if not os.path.exists(self._weights_path):
            return
        try:
            self._load_model()
        except (OSError, ValueError) as error:
            if not os.path.exists(self._prev_weights_path):
                raise BackupError(
                    f"The backup {self._weights_path} cannot be read ({error}); delete "
                    f"{self.backup_dir} to start over.") from error
            logging.warning("Backup %s cannot be read (%s); falling back to the "
                            "previous copy.", self._weights_path, error)
            for previous, latest in ((self._prev_weights_path, self._weights_path),
                                     (self._prev_training_metadata_path,
                                      self._training_metadata_path)):
                if os.path.exists(previous):
                    os.replace(previous, latest)
            try:
                self._load_model()
            except (OSError, ValueError) as error2:
                raise BackupError(
                    f"Neither the backup nor its previous copy in {self.backup_dir} can "
                    f"be read ({error2}); delete that directory to start over.") from error2
        step = int(self.model.optimizer.iterations.numpy()) if self.model.optimizer else 0
        epoch = self._read_metadata()["epoch"] if os.path.exists(
            self._training_metadata_path) else 0
        self.resumed_from = {"epoch": epoch, "step": step}
        # Keras restores the epoch; count it as done for the schedule of batch saves.
        self._current_epoch = epoch
        logging.info("Resuming from the backup in %s: epoch %d, optimizer step %d.",
                     self.backup_dir, epoch + 1, step)
        print(f"Resuming from the backup in {self.backup_dir}: epoch {epoch + 1}, "
              f"optimizer step {step}.", flush=True)

    def _check_workers_agree(self):
        """Raises BackupError when the workers of a multi-worker run are at different
        optimizer steps; Keras does not synchronize restored weights."""
        strategy = self.model.distribute_strategy
        if not in_multi_worker_mode(strategy):
            return
        step = int(self.model.optimizer.iterations.numpy())
        local = strategy.run(lambda: tf.constant([step], tf.int64))
        steps = strategy.gather(local, axis=0).numpy().tolist()  # One per replica.
        if len(set(steps)) > 1:
            raise BackupError(
                f"The workers resumed from backups of different optimizer steps {steps}"
                f" (a backup was unreadable or missing on some worker); put the same "
                f"step's backup on every worker or delete every worker's backup "
                f"directory to start over.")

    def on_train_batch_end(self, batch, logs=None):
        if not _finite((logs or {}).get("loss", 0)):
            self._diverged = True
        if not self._diverged:
            super().on_train_batch_end(batch, logs)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite((logs or {}).get("loss", 0)):
            self._diverged = True
        if not self._diverged:
            super().on_epoch_end(epoch, logs)

    def on_train_end(self, logs=None):
        if not self._diverged:  # Keep the last good state of a diverged run.
            super().on_train_end(logs)


def image_grid(images, columns):
    """[N, H, W, C] in [0, 1] -> one image [1, rows * H, columns * W, C]."""
    images = np.clip(np.asarray(images, np.float32), 0.0, 1.0)
    count, height, width, channels = images.shape
    rows = -(-count // columns)
    padded = np.zeros((rows * columns, height, width, channels), np.float32)
    padded[:count] = images
    grid = padded.reshape(rows, columns, height, width, channels)
    return grid.transpose(0, 2, 1, 3, 4).reshape(1, rows * height, columns * width,
                                                 channels)


class ImageGrid(keras.callbacks.Callback):
    """Logs `samples` (decoded draws from the prior) and `reconstructions` (inputs on
    the top row, their reconstructions below) to `log_dir` at each epoch's end."""

    def __init__(self, log_dir, images, num_samples=16, seed=0):
        super().__init__()
        self.log_dir = log_dir
        self.inputs = images  # images, or a conditional model's inputs
        self.images = np.asarray(images["images"] if isinstance(images, dict) else images,
                                 np.float32)
        self.num_samples = int(num_samples)
        self.seed = seed
        self._writer = None
        self._failed = False

    def _sample(self, count):
        """Prior samples; a class-conditional model's cycle through the classes."""
        classes = getattr(self.model, "num_classes", 0)
        labels = np.arange(count) % classes if classes else None
        return self.model.sample(count, labels=labels)

    def on_train_begin(self, logs=None):
        # The first eager call of the prior would otherwise retrace the train step
        # in the next epoch (seconds with XLA).
        self._sample(1)
        self.model.reconstruct(tf.nest.map_structure(lambda rows: rows[:1], self.inputs))

    def on_epoch_end(self, epoch, logs=None):
        if self._failed:
            return
        try:
            self._draw(epoch)
        except Exception as error:  # noqa: BLE001 -- a preview never ends a run
            self._failed = True
            logging.warning("The image previews stop (%s: %s); training goes on.",
                            type(error).__name__, checks.first_line(error))

    def _draw(self, epoch):
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        columns = max(len(self.images), 1)
        samples = self._sample(self.num_samples)
        reconstructions = self.model.reconstruct(self.inputs)
        pairs = np.concatenate([self.images, np.asarray(reconstructions)], axis=0)
        with self._writer.as_default(step=epoch):
            tf.summary.image("samples", image_grid(samples, int(math.isqrt(
                self.num_samples)) or 1))
            tf.summary.image("reconstructions", image_grid(pairs, columns))
        self._writer.flush()

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None


class EpochTimer(keras.callbacks.Callback):
    """Adds `epoch_time_s` and `images_per_s` (training only) to the epoch logs.

    `batch_size` is the global batch; the last partial batch counts as a full one.
    """

    def __init__(self, batch_size):
        super().__init__()
        self.batch_size = int(batch_size)
        self.times = []
        self.rates = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._elapsed = None
        self._steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps = int(batch) + 1

    def on_test_begin(self, logs=None):
        if getattr(self, "_elapsed", 0) is None:  # Validation inside an epoch.
            self._elapsed = time.perf_counter() - self._start

    def on_epoch_end(self, epoch, logs=None):
        elapsed = self._elapsed or (time.perf_counter() - self._start)
        rate = self._steps * self.batch_size / max(elapsed, 1e-9)
        self.times.append(elapsed)
        self.rates.append(rate)
        if logs is not None:
            logs["epoch_time_s"] = elapsed
            logs["images_per_s"] = rate


def log_spaced(last, per_decade, first=10_000):
    """Example counts round(10 ** (j / per_decade)) in [first, last], `first` and
    `last`."""
    low = math.ceil(per_decade * math.log10(first) - 1e-9)
    high = math.floor(per_decade * math.log10(last) + 1e-9)
    points = {round(10 ** (j / per_decade)) for j in range(low, high + 1)}
    return sorted(p for p in points | {int(first), int(last)} if first <= p <= last)


class BoundCurve(keras.callbacks.Callback):
    """At each of `points` (training examples seen), one row of `path` (CSV):
    examples, seconds, train_elbo, test_elbo [, test_log_px].

    The ELBOs are the means over `images["train"]` and `images["test"]` (fixed
    images, one z each, the weights of that moment: the raw ones when an EMA is
    swapped in only for validation); `test_log_px` is the
    `nll_samples`-sample importance estimate of log p(x) (K&W Figure 3). A point is
    taken at the first batch end at or past it (every `steps_per_execution` steps);
    examples = optimizer steps x `examples_per_step`; seconds of training (these
    evaluations not counted) since the start. With `resume` (a run resumed from its
    backup) it appends to the rows it had, its clock going on from the last, and does
    not take those points again; otherwise it starts the file anew.
    """

    def __init__(self, path, images, examples_per_step, points, nll_samples=0, seed=0,
                 resume=False):
        super().__init__()
        self.path, self.images, self.resume = path, images, resume
        self.examples_per_step = int(examples_per_step)
        self.points, self.nll_samples, self.seed = list(points), int(nll_samples), seed
        self.columns = ["examples", "seconds", "train_elbo", "test_elbo"] + (
            ["test_log_px"] if self.nll_samples else [])

    def _seen(self):
        return int(self.model.optimizer.iterations.numpy()) * self.examples_per_step

    def _row(self, images, nll_samples):
        begin = time.perf_counter()
        row = {"examples": self._seen(), "seconds": begin - self._start}
        for part, inputs in images.items():
            row[f"{part}_elbo"] = evaluate.evaluate_elbo(
                self.model, inputs, seed=self.seed, jit_compile=False)["elbo"].mean
        if nll_samples:
            row["test_log_px"] = evaluate.importance_sampled_log_px(
                self.model, images["test"], nll_samples, seed=self.seed,
                jit_compile=False, verbose=0).mean
        self._start += time.perf_counter() - begin  # the clock counts training only
        return row

    def on_train_begin(self, logs=None):
        if not self.resume and os.path.exists(self.path):
            os.remove(self.path)  # a finished run's curve, not this one's
        rows = rundir.history_rows(self.path)
        # A resumed run's clock goes on from its last row.
        self._start = time.perf_counter() - (float(rows[-1]["seconds"]) if rows else 0.0)
        seen = max([int(float(r["examples"])) for r in rows] + [self._seen()])
        self.points = [p for p in self.points if p > seen]
        # The model's first eager call would otherwise retrace the train step
        # mid-epoch (as in ImageGrid): call it now, on two images.
        self._row({part: tf.nest.map_structure(lambda rows: rows[:2], inputs)
                   for part, inputs in self.images.items()}, min(self.nll_samples, 2))

    def on_train_batch_end(self, batch, logs=None):
        if not self.points or self._seen() < self.points[0]:
            return
        row = self._row(self.images, self.nll_samples)
        self.points = [p for p in self.points if p > row["examples"]]
        new = not os.path.exists(self.path)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, self.columns)
            if new:
                writer.writeheader()
            writer.writerow(row)

