"""The training callbacks (`callbacks.py`) on tiny models, against known answers.

* NonFiniteGuard stops at the first NaN batch and voids that epoch's logs;
* BestCheckpoint saves finite improvements only, knows its best epoch and records it
  (best.json) for a resumed run whose history dropped that epoch; a model and a
  record are written whole or not at all, and clearing a run leaves no partials;
* Backup keeps the last good backup of a run that diverged, resumes from it, falls
  back to its previous copy and fails in one line when neither can be read; History
  then logs each epoch once;
* image_grid and ImageGrid: images placed in a grid, the inputs above their
  reconstructions in TensorBoard, and a preview that fails never ends a run;
* EpochTimer and BoundCurve on a fake clock: the time of training, validation and
  the curve's own evaluations left out; log-spaced points; a resumed curve appends.
"""

import csv
import datetime
import json
import math
import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from pattern_data import binary_images
from tfvae import callbacks as vae_callbacks
from tfvae import evaluate, rundir, user_files
from tiny_models import tiny_vae

NAN = float("nan")


def regression(seed=0):
    """y = x w on 16 points of 2 features; 4 batches of 4 per epoch."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    return model


X = np.random.default_rng(0).normal(size=(16, 2)).astype("float32")
Y = X @ np.array([[1.0], [-1.0]], "float32")


def fit(model, callbacks, epochs=3):
    return model.fit(X, Y, batch_size=4, epochs=epochs, shuffle=False, verbose=0,
                     callbacks=callbacks)


class PoisonAt(keras.callbacks.Callback):
    """Sets a weight to NaN when `epoch` (0-based) begins: every later loss is NaN."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            kernel = self.model.layers[0].kernel
            kernel.assign(np.full(kernel.shape, np.nan, "float32"))


class Weights(keras.callbacks.Callback):
    """The model's weights when training begins and at each epoch's end."""

    def on_train_begin(self, logs=None):
        self.begin, self.epochs = self.model.get_weights(), []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(self.model.get_weights())


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# -- NonFiniteGuard ----------------------------------------------------------------------

def test_the_guard_stops_at_the_first_nan_batch():
    guard = vae_callbacks.NonFiniteGuard()
    history = fit(regression(), [PoisonAt(1), guard])
    assert set(guard.diverged) == {"epoch", "batch", "loss"}
    assert (guard.diverged["epoch"], guard.diverged["batch"]) == (1, 0)
    assert math.isnan(guard.diverged["loss"])
    assert len(history.history["loss"]) == 2  # epoch 3 never ran
    assert np.isfinite(history.history["loss"][0])


def test_a_finite_run_is_not_touched_and_a_bad_validation_loss_stops_it():
    guard = vae_callbacks.NonFiniteGuard()
    fit(regression(), [guard], epochs=2)
    assert guard.diverged is None
    guard.set_model(regression())
    logs = {"loss": 0.5, "val_loss": math.inf, "elbo": -90.0}
    guard.on_epoch_end(4, logs)
    assert guard.diverged == {"epoch": 4, "batch": None, "loss": math.inf,
                              "key": "val_loss"}
    assert guard.model.stop_training
    assert all(math.isnan(value) for value in logs.values())  # voided for later ones


# -- BestCheckpoint ------------------------------------------------------------------------

def test_the_checkpoint_saves_finite_improvements_only(tmp_path):
    path = str(tmp_path / "best.keras")
    checkpoint = vae_callbacks.BestCheckpoint(path, monitor="val_elbo", mode="max")
    model = regression()
    checkpoint.set_model(model)
    saved = {}
    for epoch, value in enumerate([NAN, -5.0, math.inf, -7.0, -3.0, None]):
        model.layers[0].bias.assign([float(epoch)])  # which epoch's weights a file holds
        checkpoint.on_epoch_end(epoch, {} if value is None else {"val_elbo": value})
        saved[epoch] = os.path.exists(path) and float(
            keras.saving.load_model(path).layers[0].bias.numpy()[0])
    assert saved == {0: False, 1: 1.0, 2: 1.0, 3: 1.0, 4: 4.0, 5: 4.0}
    assert (checkpoint.best_epoch, checkpoint.best) == (5, -3.0)


def test_a_resumed_checkpoint_starts_from_the_best_it_had(tmp_path):
    path = str(tmp_path / "best.keras")
    checkpoint = vae_callbacks.BestCheckpoint(path, "val_elbo", initial_best=(4, -3.0))
    checkpoint.set_model(regression())
    checkpoint.on_epoch_end(5, {"val_elbo": -4.0})
    assert not os.path.exists(path) and checkpoint.best_epoch == 4
    checkpoint.on_epoch_end(6, {"val_elbo": -2.0})
    assert os.path.exists(path) and checkpoint.best_epoch == 7


def test_the_checkpoint_records_what_its_file_holds_for_a_resumed_run(tmp_path):
    """A run resumed from a backup older than its best epoch drops that epoch from
    history.csv; a second resume must still know what best.keras holds, and not
    overwrite it with a worse model."""
    files = rundir.paths(str(tmp_path))
    checkpoint = vae_callbacks.BestCheckpoint(
        files[rundir.BEST], "val_elbo", record_path=files[rundir.BEST_RECORD])
    checkpoint.set_model(regression())
    for epoch, value in enumerate([-5.0, -3.0, -4.0]):
        checkpoint.on_epoch_end(epoch, {"val_elbo": value})
    with open(files[rundir.HISTORY], "w") as f:  # the rows a resume kept: epoch 1 only
        f.write("epoch,val_elbo\n0,-5.0\n")
    assert rundir.best_saved(str(tmp_path), "val_elbo") == (2, -3.0)
    assert rundir.best_saved(str(tmp_path), "val_iwae") is None  # another bound
    os.remove(files[rundir.BEST_RECORD])  # a run from before best.json: history
    assert rundir.best_saved(str(tmp_path), "val_elbo") == (1, -5.0)
    assert sorted(os.listdir(tmp_path)) == ["best.keras", "history.csv"]  # no partials


def test_a_json_record_is_written_whole_or_not_at_all(tmp_path):
    path = str(tmp_path / "best.json")
    user_files.write_json(path, {"value": -3.5, "date": datetime.date(2026, 12, 6)})
    circular = []
    circular.append(circular)
    with pytest.raises(ValueError, match="Circular reference"):
        user_files.write_json(path, {"value": circular})
    with open(path) as f:
        assert json.load(f) == {"value": -3.5, "date": "2026-12-06"}  # the old file
    assert os.listdir(tmp_path) == ["best.json"]  # no partial left


def test_a_model_save_that_fails_leaves_the_old_file_whole(tmp_path, monkeypatch):
    path = str(tmp_path / "model.keras")
    model = regression()
    user_files.save_model_whole(model, path)
    before = open(path, "rb").read()

    def half_then_fail(filepath, **_):
        with open(filepath, "wb") as f:
            f.write(b"PK half an archive")
        raise KeyboardInterrupt
    monkeypatch.setattr(model, "save", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        user_files.save_model_whole(model, path)
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["model.keras"]


def test_clearing_a_run_directory_removes_partials_and_keeps_other_files(tmp_path):
    files = rundir.paths(str(tmp_path))
    os.makedirs(files[rundir.BACKUP])
    for path in (files[rundir.BEST], files[rundir.BEST] + user_files.KERAS_PARTIAL,
                 files[rundir.METRICS] + user_files.PARTIAL, str(tmp_path / "notes.txt")):
        with open(path, "w") as f:
            f.write("x")
    rundir.clear(str(tmp_path))
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_a_minimizing_checkpoint_saves_decreases(tmp_path):
    checkpoint = vae_callbacks.BestCheckpoint(str(tmp_path / "best.keras"), "val_loss",
                                              mode="min", initial_best=(1, 3.0))
    checkpoint.set_model(regression())
    for epoch, value in enumerate([4.0, 2.0, 2.0, 1.0], start=1):
        checkpoint.on_epoch_end(epoch, {"val_loss": value})
    assert (checkpoint.best_epoch, checkpoint.best) == (5, 1.0)
    with pytest.raises(ValueError, match="Unknown mode 'up'"):
        vae_callbacks.BestCheckpoint("best.keras", "val_loss", mode="up")


# -- Backup --------------------------------------------------------------------------------

def test_a_diverged_run_keeps_its_last_good_backup_and_the_next_run_resumes_it(
        tmp_path, capsys):
    backup_dir = str(tmp_path / "backup")
    weights = Weights()
    fit(regression(), [PoisonAt(1), vae_callbacks.NonFiniteGuard(),
                       vae_callbacks.Backup(backup_dir), weights])
    assert os.path.exists(os.path.join(backup_dir, "latest.weights.h5"))
    backup, resumed = vae_callbacks.Backup(backup_dir), Weights()
    fit(regression(seed=1), [backup, resumed])
    assert backup.resumed_from == {"epoch": 1, "step": 4}
    assert_same(resumed.begin, weights.epochs[0])  # epoch 1's, not the NaN ones
    assert f"Resuming from the backup in {backup_dir}: epoch 2, optimizer step 4." in \
        capsys.readouterr().out
    assert not os.path.exists(backup_dir)  # a finished run deletes its backup


def finished_run_with_two_backups(backup_dir):
    """The weights at each epoch's end of a 2-epoch run that left its backups."""
    weights = Weights()
    fit(regression(), [vae_callbacks.Backup(backup_dir, delete_checkpoint=False),
                       weights], epochs=2)
    return weights.epochs


def read_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def truncate(path):
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)


def test_an_unreadable_backup_falls_back_to_its_previous_copy(tmp_path):
    backup_dir = tmp_path / "backup"
    epochs = finished_run_with_two_backups(str(backup_dir))
    truncate(backup_dir / "latest.weights.h5")
    backup, resumed = vae_callbacks.Backup(str(backup_dir)), Weights()
    fit(regression(seed=1), [backup, resumed], epochs=2)
    assert backup.resumed_from == {"epoch": 1, "step": 4}
    assert_same(resumed.begin, epochs[0])


def test_unreadable_backups_fail_in_one_line(tmp_path):
    backup_dir = tmp_path / "backup"
    finished_run_with_two_backups(str(backup_dir))
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        truncate(backup_dir / name)
    with pytest.raises(vae_callbacks.BackupError) as error:
        fit(regression(), [vae_callbacks.Backup(str(backup_dir))])
    message = str(error.value)
    assert message.startswith(f"Neither the backup nor its previous copy in {backup_dir}"
                              " can be read")
    assert message.endswith("delete that directory to start over.")
    if os.path.exists(backup_dir / "latest.weights.h5.bkp"):  # (the fallback moves it)
        os.remove(backup_dir / "latest.weights.h5.bkp")
    assert os.path.exists(backup_dir / "latest.weights.h5")
    with pytest.raises(vae_callbacks.BackupError, match="cannot be read .*; delete "):
        fit(regression(), [vae_callbacks.Backup(str(backup_dir))])


def test_a_resumed_run_logs_each_epoch_once(tmp_path):
    """The fallback resumes after epoch 1 of 2: epoch 2, logged before, is trained
    and logged again, in place of the old row."""
    backup_dir, path = tmp_path / "backup", str(tmp_path / "history.csv")
    fit(regression(), [vae_callbacks.Backup(str(backup_dir), delete_checkpoint=False),
                       vae_callbacks.History(path)], epochs=2)
    truncate(backup_dir / "latest.weights.h5")
    again = fit(regression(seed=1), [vae_callbacks.Backup(str(backup_dir)),
                                     vae_callbacks.History(path, append=True)], epochs=2)
    rows = read_rows(path)
    assert [row["epoch"] for row in rows] == ["0", "1"]
    assert float(rows[1]["loss"]) == pytest.approx(again.history["loss"][0], rel=1e-6)


# -- images ------------------------------------------------------------------------------

def test_image_grid_places_images_row_by_row_and_pads_with_black():
    images = np.stack([np.full((2, 3, 1), value, "float32") for value in (0.2, 0.4, 1.5)])
    grid = vae_callbacks.image_grid(images, columns=2)
    assert grid.shape == (1, 4, 6, 1)
    expected = np.array([[0.2] * 3 + [0.4] * 3] * 2 + [[1.0] * 3 + [0.0] * 3] * 2)
    np.testing.assert_allclose(grid[0, ..., 0], expected, rtol=1e-6)  # 1.5 clipped


def summary_images(log_dir):
    """{tag: [H, W, C] uint8} of the images written to `log_dir` (the last of each)."""
    images = {}
    for path in sorted(os.listdir(log_dir)):
        for event in tf.compat.v1.train.summary_iterator(os.path.join(log_dir, path)):
            for value in event.summary.value:
                png = tf.make_ndarray(value.tensor)[2]  # width, height, images
                images[value.tag] = tf.io.decode_png(png).numpy()
    return images


def test_the_image_grid_shows_samples_and_the_inputs_above_their_reconstructions(
        tmp_path):
    model = tiny_vae(seed=0)
    inputs = binary_images(3)
    grid = vae_callbacks.ImageGrid(str(tmp_path), inputs, num_samples=4)
    grid.set_model(model)
    grid.on_train_begin()
    grid.on_epoch_end(0)
    grid.on_train_end()
    images = summary_images(tmp_path)
    assert set(images) == {"samples", "reconstructions"}
    assert images["samples"].shape == (16, 16, 1)  # 4 samples, 2 by 2
    pairs = images["reconstructions"]
    assert pairs.shape == (16, 24, 1)  # 3 inputs above their 3 reconstructions
    top = np.concatenate(list(inputs), axis=1)
    np.testing.assert_array_equal(pairs[:8], (255 * top).astype("uint8"))
    reconstructions = np.concatenate(list(np.asarray(model.reconstruct(inputs))), axis=1)
    np.testing.assert_allclose(pairs[8:] / 255.0, reconstructions, atol=1 / 255)


def test_a_failing_image_preview_warns_once_and_training_goes_on(tmp_path, caplog):
    """A preview that cannot be drawn (e.g. images of 4 channels) must not end a run."""
    class Broken:
        num_classes = 0
        calls = 0

        def sample(self, count, labels=None):
            Broken.calls += 1
            raise ValueError("Expected images [N, H, W, 1 or 3], got shape (3, 8, 8, 4).")

    grid = vae_callbacks.ImageGrid(str(tmp_path), np.zeros((2, 8, 8, 4), np.float32))
    grid.set_model(Broken())
    for epoch in range(3):
        grid.on_epoch_end(epoch)
    grid.on_train_end()
    assert Broken.calls == 1
    warnings = [r.getMessage() for r in caplog.records
                if "previews stop" in r.getMessage()]
    assert warnings == ["The image previews stop (ValueError: Expected images [N, H, W, "
                        "1 or 3], got shape (3, 8, 8, 4).); training goes on."]


# -- time and the bound curve ------------------------------------------------------------

class Clock:
    """A perf_counter that moves only when told to, or by `tick` at every call."""

    def __init__(self, tick=0.0):
        self.now, self.tick = 0.0, tick

    def __call__(self):
        self.now += self.tick
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(vae_callbacks, "time", types.SimpleNamespace(perf_counter=clock))
    return clock


def test_the_epoch_timer_counts_training_and_leaves_validation_out(clock):
    timer = vae_callbacks.EpochTimer(batch_size=32)
    timer.on_test_begin()  # an evaluation before any epoch changes nothing
    clock.now = 10.0
    timer.on_epoch_begin(0)
    for batch in range(3):
        timer.on_train_batch_end(batch)
    clock.now = 12.5
    timer.on_test_begin()  # validation starts: training took 2.5 s
    clock.now = 14.0
    timer.on_test_begin()  # a second evaluation in the same epoch changes nothing
    clock.now = 20.0
    logs = {}
    timer.on_epoch_end(0, logs)
    assert logs == {"epoch_time_s": 2.5, "images_per_s": 3 * 32 / 2.5}
    timer.on_epoch_begin(1)  # without validation: the whole epoch
    timer.on_train_batch_end(0)
    clock.now = 24.0
    timer.on_epoch_end(1, logs)
    assert (logs["epoch_time_s"], logs["images_per_s"]) == (4.0, 8.0)
    assert timer.times == [2.5, 4.0] and timer.rates == [38.4, 8.0]


def test_log_spaced_points():
    assert vae_callbacks.log_spaced(10**6, 2) == [10000, 31623, 100000, 316228, 1000000]
    assert vae_callbacks.log_spaced(192, 4, first=16) == [16, 18, 32, 56, 100, 178, 192]


def test_the_bound_curve_takes_its_points_on_training_time_and_a_resumed_one_appends(
        tmp_path, clock):
    clock.tick = 100.0  # every reading of the clock is 100 s later
    model = tiny_vae(seed=0)
    model.compile(optimizer="adam")
    images = {"train": binary_images(6), "test": binary_images(5, seed=1, on=0.6)}
    path = str(tmp_path / "curve.csv")

    def curve(points, resume=False):
        callback = vae_callbacks.BoundCurve(path, images, examples_per_step=8,
                                            points=points, resume=resume)
        callback.set_model(model)
        callback.on_train_begin()
        return callback

    def step_to(step, callback):
        model.optimizer.iterations.assign(step)
        callback.on_train_batch_end(step - 1)

    first = curve([8, 24, 40])
    for step in (1, 2, 3):  # 8, 16, 24 examples
        step_to(step, first)
    rows = read_rows(path)
    assert [int(r["examples"]) for r in rows] == [8, 24]
    # Clock readings: start 100; the warm-up row 200-300; rows 400-500 and 600-700.
    # Training time is what lies outside the rows: 100 s before each of them.
    assert [float(r["seconds"]) for r in rows] == [200.0, 300.0]
    for part in ("train", "test"):
        expected = evaluate.evaluate_elbo(model, images[part], seed=0,
                                          jit_compile=False)["elbo"].mean
        assert float(rows[-1][f"{part}_elbo"]) == pytest.approx(expected, rel=1e-6)
    assert rows[-1]["train_elbo"] != rows[-1]["test_elbo"]

    again = curve([8, 24, 40], resume=True)
    assert again.points == [40]  # the points it had are not taken again
    step_to(5, again)
    rows = read_rows(path)
    assert [int(r["examples"]) for r in rows] == [8, 24, 40]
    assert float(rows[-1]["seconds"]) > 300.0  # its clock goes on
    curve([8], resume=False)
    assert not os.path.exists(path)  # a new run's curve starts anew
