"""The training CLI end to end on tfds.testing.mock_data (random bytes, binarized).

Runs go through `tfvae.train.run(argv)`, the command line in-process (a subprocess
costs seconds of TensorFlow import); one test runs the real `python -m tfvae.train`.
"""

import csv
import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfvae import builders, data, rundir, train

pytestmark = pytest.mark.usefixtures("op_determinism_off_after")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 48  # 3 steps of 16 per epoch
TINY = dict(dataset="mnist", binarization="dynamic", validation_split="test",
            encoder_hidden_units=[16], decoder_hidden_units=[16], latent_dim=2,
            batch_size=16, export=False, verbose=0, jit_compile=False,
            log_images=False)
FLAGFILE = """\
# A tiny run on mock MNIST (random bytes, binarized each epoch).
--dataset=mnist
--binarization=dynamic
--validation_split=test
--encoder_hidden_units=16
--decoder_hidden_units=16
--latent_dim=3
--batch_size=16
--epochs=2
--deterministic
--noexport
--verbose=0
"""


def _argv(**options):
    """Command-line flags for `options` (booleans as --name / --noname)."""
    argv = ["tfvae.train"]
    for name, value in options.items():
        if isinstance(value, bool):
            argv.append(f"--{'' if value else 'no'}{name}")
        elif isinstance(value, (list, tuple)):
            argv.append(f"--{name}={','.join(map(str, value))}")
        else:
            argv.append(f"--{name}={value}")
    return argv


def _run(*argv):
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        return train.run(["tfvae.train", "--noexport", *argv])


def _fails(*argv, mock=True):
    """The one-line message of a run that must stop before training."""
    with pytest.raises(SystemExit) as exit_info:
        if mock:
            _run(*argv)
        else:
            train.run(["tfvae.train", "--noexport", *argv])
    message = str(exit_info.value.code)
    assert message.startswith("tfvae.train: error: ") and "\n" not in message
    return message


def _weights(path):
    return keras.saving.load_model(path).get_weights()


def _history(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """One run through the CLI with a flagfile, a command-line override, XLA and
    TensorBoard images: 2 epochs on mock MNIST."""
    root = tmp_path_factory.mktemp("cli")
    flagfile = root / "tiny.cfg"
    flagfile.write_text(FLAGFILE)
    output_dir = root / "run"
    metrics = _run(f"--flagfile={flagfile}", "--latent_dim=2", f"--output_dir={output_dir}")
    return output_dir, metrics


def test_cli_run_writes_checkpoints_metrics_and_logs(cli_run):
    output_dir, metrics = cli_run
    names = set(os.listdir(output_dir))
    assert {"best.keras", "model.keras", "metrics.json", "history.csv", "config.json",
            "logs"} <= names
    assert "backup" not in names  # Deleted once training finished.
    with open(output_dir / "metrics.json") as f:
        written = json.load(f)
    assert written["test"] == pytest.approx(metrics["test"])
    test = written["test"]
    assert np.isfinite(test["elbo"]) and test["elbo"] == pytest.approx(
        -(test["rate"] + test["distortion"]), rel=1e-5)
    assert written["optimizer_steps"] == 2 * 3 and written["resumed_from"] is None
    history = _history(output_dir / "history.csv")
    assert [row["epoch"] for row in history] == ["0", "1"]
    assert {"elbo", "val_elbo", "rate", "distortion", "images_per_s"} <= set(history[0])
    # The final model holds the best validation epoch's weights and evaluates.
    model = keras.saving.load_model(output_dir / "model.keras")
    for got, want in zip(model.get_weights(), _weights(output_dir / "best.keras")):
        np.testing.assert_array_equal(got, want)
    assert written["best_epoch"] in (1, 2)
    for subdir, tags in (("train", {"epoch_elbo", "epoch_rate", "epoch_distortion"}),
                         ("validation", {"epoch_elbo", "epoch_rate", "epoch_distortion"}),
                         ("images", {"samples", "reconstructions"})):
        assert tags <= _summary_tags(output_dir / "logs" / subdir), subdir


def _summary_tags(directory):
    return {value.tag for path in directory.glob("events.out.*")
            for event in tf.compat.v1.train.summary_iterator(str(path))
            for value in event.summary.value}


def test_flagfile_is_read_and_the_command_line_overrides_it(cli_run):
    output_dir, _ = cli_run
    with open(output_dir / "config.json") as f:
        config = json.load(f)
    assert config["latent_dim"] == 2  # command line over the flagfile's 3
    assert config["batch_size"] == 16 and config["epochs"] == 2  # from the flagfile
    assert config["encoder_hidden_units"] == [16] and config["dataset"] == "mnist"
    assert config["deterministic"] is True
    assert keras.saving.load_model(output_dir / "model.keras").encoder.latent_dim == 2


@pytest.mark.slow
def test_deterministic_runs_give_identical_weights(cli_run, tmp_path):
    output_dir, _ = cli_run
    with open(output_dir / "config.json") as f:
        config = json.load(f)
    config["output_dir"] = str(tmp_path / "again")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        train.train_and_evaluate(**config)
    first = _weights(output_dir / "model.keras")
    second = _weights(tmp_path / "again" / "model.keras")
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_nan_loss_stops_with_a_message_and_keeps_the_best_checkpoint(cli_run, tmp_path):
    source, _ = cli_run
    output_dir = tmp_path / "nan"
    shutil.copytree(source, output_dir)
    best = output_dir / "best.keras"
    before = _weights(best)
    # A learning rate of 1e30 sends the weights to Inf within a step or two.
    message = _fails(*_argv(**{**TINY, "epochs": 2, "optimizer": "sgd",
                               "learning_rate": 1e30})[1:],
                     f"--output_dir={output_dir}")
    assert "the loss became nan" in message or "the loss became inf" in message
    assert f"intact at {best}" in message
    for got, want in zip(_weights(best), before):
        np.testing.assert_array_equal(got, want)
    model = keras.saving.load_model(best)
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        images = next(iter(data.load_dataset("mnist", "test", 16)))
    assert np.isfinite(model.elbo(images)["elbo"].numpy()).all()


class _Kill(keras.callbacks.Callback):
    """Simulates a killed process: raises before `batch` of `epoch` (0-based)."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.epoch, self.batch, self._current = epoch, batch, -1

    def on_epoch_begin(self, epoch, logs=None):
        self._current = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self._current, batch) == (self.epoch, self.batch):
            raise KeyboardInterrupt("killed")


@pytest.mark.slow
def test_a_killed_run_resumes_from_the_backup(tmp_path, capsys):
    options = {**TINY, "epochs": 3, "backup_save_freq": 2}
    output_dir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES), \
            pytest.raises(KeyboardInterrupt):
        # Steps 1-3 are epoch 1; backups after steps 2 and 4; killed before step 6.
        train.train_and_evaluate(str(output_dir), callbacks=[_Kill(1, 2)], **options)
    latest = output_dir / "backup" / "latest.weights.h5"
    assert os.path.exists(latest) and os.path.exists(f"{latest}.bkp")
    truncated = tmp_path / "truncated"
    shutil.copytree(output_dir, truncated)
    size = os.path.getsize(latest)
    with open(truncated / "backup" / "latest.weights.h5", "r+b") as f:
        f.truncate(size // 2)  # A kill in the middle of writing the backup.

    metrics = _run(*_argv(**options)[1:], f"--output_dir={output_dir}")
    assert "Resuming from the backup" in capsys.readouterr().out
    # Epoch 2 restarts at its first batch from the weights after step 4.
    assert metrics["resumed_from"] == {"epoch": 1, "step": 4}
    assert metrics["optimizer_steps"] == 4 + 2 * 3
    assert [row["epoch"] for row in _history(output_dir / "history.csv")] == \
        ["0", "1", "2"]
    assert not os.path.exists(output_dir / "backup")

    # A truncated latest backup falls back to the previous copy (after step 2).
    metrics = _run(*_argv(**options)[1:], f"--output_dir={truncated}")
    assert metrics["resumed_from"] == {"epoch": 0, "step": 2}
    assert metrics["optimizer_steps"] == 2 + 3 * 3
    # Epoch 0, logged before the kill and trained again, is logged once.
    assert [row["epoch"] for row in _history(truncated / "history.csv")] == \
        ["0", "1", "2"]



class _AscendInLastEpoch(keras.callbacks.Callback):
    """A negative step size in the last epoch: its validation bound must fall."""

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.params["epochs"] - 1:
            self.model.optimizer.learning_rate.assign(-1.0)


@pytest.mark.slow
def test_metrics_count_every_step_when_the_best_epoch_is_not_the_last(tmp_path):
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        metrics = train.train_and_evaluate(str(tmp_path / "run"), callbacks=[
            _AscendInLastEpoch()], **{**TINY, "epochs": 3})
    assert metrics["best_epoch"] < 3  # best.keras, tested, is an earlier epoch's
    assert metrics["optimizer_steps"] == 3 * metrics["steps_per_epoch"]


@pytest.mark.slow
def test_the_bound_curve_is_log_spaced_and_a_resumed_run_appends_to_it(tmp_path):
    # 4 epochs of 3 steps of 16 images: points 16, 18, 32, 56, 100, 178, 192.
    options = {**TINY, "epochs": 4, "backup_save_freq": 1, "curve_points_per_decade": 4,
               "curve_images": 20, "curve_nll_samples": 4}
    output_dir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES), \
            pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(str(output_dir), callbacks=[_Kill(2, 1)], **options)
    before = _history(output_dir / "curve.csv")
    assert [int(row["examples"]) for row in before] == [16, 32, 64, 112]
    _run(*_argv(**options)[1:], f"--output_dir={output_dir}")
    rows = _history(output_dir / "curve.csv")
    assert rows[:len(before)] == before
    # Resumed at step 7 (112 examples): the next points are 178 and 192.
    assert [int(row["examples"]) for row in rows[len(before):]] == [192]
    seconds = [float(row["seconds"]) for row in rows]
    assert seconds == sorted(seconds)
    for row in rows:
        train_elbo, test_elbo, log_px = (float(row[k]) for k in
                                         ("train_elbo", "test_elbo", "test_log_px"))
        # 784 Bernoulli pixels: each bound is below 0 and above 784 log(1/2) minus a KL.
        assert -2000 < train_elbo < 0 and -2000 < test_elbo < 0 and log_px < 0
    # The run is finished (no backup): a new run there starts a new curve (2 epochs:
    # points 16, 18, 32, 56, 96), not one appended to the old run's.
    _run(*_argv(**{**options, "epochs": 2})[1:], f"--output_dir={output_dir}")
    assert [int(row["examples"]) for row in _history(output_dir / "curve.csv")] == [
        16, 32, 64, 96]

def test_an_unreadable_backup_fails_in_one_line(tmp_path):
    backup = tmp_path / "backup"
    backup.mkdir()
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        (backup / name).write_bytes(b"not hdf5")
    message = _fails(*_argv(**TINY)[1:], f"--output_dir={tmp_path}")
    assert f"Neither the backup nor its previous copy in {backup} can be read" in message


def test_a_backup_of_another_model_is_refused(tmp_path):
    output_dir = tmp_path / "run"
    (output_dir / "backup").mkdir(parents=True)
    (output_dir / "backup" / "latest.weights.h5").write_bytes(b"")
    trainer = train.trainer_flags()  # the run below, but for its latent size
    trainer(_argv(**TINY))
    (output_dir / "config.json").write_text(json.dumps(
        {**train.options_from_flags(trainer), "dataset": "mnist", "latent_dim": 7}))
    message = _fails(*_argv(**TINY)[1:], f"--output_dir={output_dir}")
    assert "holds a backup of a different run (latent_dim: 7 -> 2" in message
    assert "pass --overwrite to replace it" in message


@pytest.mark.slow
def test_a_run_directory_belongs_to_one_run(tmp_path):
    """A finished run is neither overwritten by another configuration (it was,
    silently) nor kept from --overwrite; the same configuration runs again there."""
    output_dir, one = tmp_path / "run", {**TINY, "epochs": 1}
    _run(*_argv(**one)[1:], f"--output_dir={output_dir}")
    files = {name: (output_dir / name).read_bytes()
             for name in ("config.json", "best.keras", "model.keras", "metrics.json")}
    message = _fails(*_argv(**{**one, "latent_dim": 3})[1:], f"--output_dir={output_dir}")
    assert f"{output_dir} holds a different run (latent_dim: 2 -> 3); use another " \
        "--output_dir, or pass --overwrite" in message
    assert files == {name: (output_dir / name).read_bytes() for name in files}
    _run(*_argv(**{**one, "latent_dim": 3})[1:], "--overwrite",
         f"--output_dir={output_dir}")
    assert json.loads((output_dir / "config.json").read_text())["latent_dim"] == 3
    assert len(_history(output_dir / "history.csv")) == 1  # the old rows deleted
    _run(*_argv(**{**one, "latent_dim": 3, "epochs": 2})[1:], f"--output_dir={output_dir}")
    assert not (output_dir / ".lock").exists()


@pytest.mark.slow
def test_a_second_trainer_on_one_directory_is_refused_until_the_first_ends(tmp_path):
    output_dir = tmp_path / "run"
    output_dir.mkdir()
    first = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        lock = output_dir / ".lock"
        lock.write_text(rundir._process(first.pid))  # as the first trainer's claim
        message = _fails(*_argv(**TINY)[1:], f"--output_dir={output_dir}")
        assert f"{output_dir} is in use by another trainer (PID {first.pid} on " in message
        assert not (output_dir / "config.json").exists()
    finally:
        first.kill()
        first.wait()
    _run(*_argv(**{**TINY, "epochs": 1})[1:], f"--output_dir={output_dir}")  # a killed run's lock
    assert (output_dir / "model.keras").exists() and not lock.exists()


@pytest.mark.parametrize("argv, expected", [
    (["--nosuchflag"], "Unknown command line flag 'nosuchflag'"),
    (["--flagfile=/no/such.cfg"], "Unable to open flagfile"),
    (["--strategy=parameter_server"],
     "flag --strategy=parameter_server: value should be one of "
     "<default|mirrored|multi_worker|tpu>"),
    (["--latent_dim=0"], "flag --latent_dim=0: 0 is not a positive integer"),
    (["--dataset=no_such_dataset"], "Unknown dataset 'no_such_dataset'; supported: "
     "binarized_mnist, mnist, fashion_mnist"),
    (["--encoder_hidden_units=5,x"], "--encoder_hidden_units must be a comma-separated"),
    (["--backup_save_freq=often"], "backup_save_freq must be 'epoch' or a positive"),
    (["--dataset=mnist", "--encoder=conv", "--decoder=conv",
      "--decoder_filters=8,8,8"], "needs height and width divisible by 8"),
    (["positional"], "unexpected arguments: positional"),
    (["--curve_points_per_decade=-1"], "flag --curve_points_per_decade=-1: -1 is not "
     "an integer in the range [0, 100]"),
    (["--curve_images=0"], "flag --curve_images=0: 0 is not a positive integer"),
    (["--curve_points_per_decade=10000000"], "flag --curve_points_per_decade=10000000: "
     "10000000 is not an integer in the range [0, 100]"),
])
def test_bad_flags_fail_in_one_line(argv, expected, tmp_path):
    assert expected in _fails(*argv, f"--output_dir={tmp_path}")


def test_unwritable_output_dir_fails_in_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    message = _fails(f"--output_dir={blocker}/run", "--dataset=mnist")
    assert f"Output dir {blocker}/run is not writable" in message
    message = _fails("--export", f"--export_dir={blocker}/export", "--dataset=mnist",
                     f"--output_dir={tmp_path}/run")
    assert f"Export dir {blocker}/export is not writable" in message


def test_missing_data_names_the_files_and_the_flag(tmp_path):
    message = _fails(f"--tfds_data_dir={tmp_path / 'tfds'}",
                     f"--tfds_manual_dir={tmp_path}", f"--output_dir={tmp_path / 'run'}",
                     mock=False)
    assert "binarized_mnist_train.amat" in message and "--tfds_manual_dir" in message


def test_images_the_model_cannot_take_fail_in_one_line(tmp_path):
    # Mock bytes 0-254 where binarized_mnist promises {0, 1}.
    message = _fails("--dataset=binarized_mnist", f"--output_dir={tmp_path}")
    assert "binarized_mnist[train] has pixel values in [0.0, 254.0]" in message


def _config_options(name):
    """train_and_evaluate's options from configs/<name>."""
    trainer = train.trainer_flags()
    trainer(["tfvae.train", f"--flagfile={ROOT}/configs/{name}"])
    return train.options_from_flags(trainer)


def test_baseline_config_parses_to_the_documented_model():
    options = _config_options("mnist.cfg")
    assert options["dataset"] == "binarized_mnist"
    assert options["encoder"] == options["decoder"] == "mlp"
    assert options["encoder_hidden_units"] == options["decoder_hidden_units"] == [500, 500]
    assert options["latent_dim"] == 50 and options["likelihood"] == "bernoulli"
    assert options["optimizer"] == "adam" and options["batch_size"] == 100


@pytest.mark.parametrize("config", sorted(name for name in os.listdir(os.path.join(ROOT, "configs"))
                                            if name.endswith(".cfg")))
def test_every_config_parses_to_a_model_that_computes_its_loss(config):
    options = _config_options(config)
    classes = 10 if options["conditional"] else 0  # a conditional config's data has labels
    model = builders.build_model((28, 28, 1), num_classes=classes,
                                 **{k: options[k] for k in train.MODEL_OPTIONS})
    images = np.random.default_rng(0).integers(0, 2, (2, 28, 28, 1)).astype("float32")
    inputs = {"images": images, "labels": np.array([0, 9])} if classes else images
    assert np.isfinite(float(model.compute_loss(y_pred=model(inputs, training=True))))


def test_every_option_is_a_flag_with_the_same_default():
    trainer = train.trainer_flags()
    trainer(["tfvae.train"])
    options = train.options_from_flags(trainer)
    defaults = {k: v for k, v in train.DEFAULTS.items()}
    assert options.keys() == defaults.keys()
    for name, value in defaults.items():
        expected = list(value) if isinstance(value, tuple) else value
        assert options[name] == expected, name


@pytest.mark.slow
def test_the_module_entry_point_reports_a_bad_flag_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "tfvae.train", "--nosuchflag"], cwd=ROOT,
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == \
        "tfvae.train: error: Unknown command line flag 'nosuchflag'"


def test_main_returns_nothing_so_that_app_run_exits_with_0(monkeypatch):
    monkeypatch.setattr(train, "train_and_evaluate", lambda **options: {"test": {}})
    # main reads train.FLAGS: absl's FLAGS on the command line, here the trainer's
    # flags alone (absl's may hold a tool's flags of the same names).
    monkeypatch.setattr(train, "FLAGS", train.trainer_flags())
    train.FLAGS(["tfvae.train"])
    assert train.main(["tfvae.train"]) is None
    assert train.run(["tfvae.train"]) == {"test": {}}


@pytest.mark.slow
def test_an_iwae_run_keeps_the_checkpoint_of_the_best_iwae_bound(tmp_path):
    output_dir = tmp_path / "iwae"
    metrics = _run(*_argv(**{**TINY, "epochs": 2, "objective": "iwae",
                             "num_samples": 3})[1:], f"--output_dir={output_dir}")
    history = _history(output_dir / "history.csv")
    assert metrics["best_val_iwae"] == pytest.approx(
        max(float(row["val_iwae"]) for row in history))
    assert "best_val_elbo" not in metrics


@pytest.mark.slow
def test_init_from_starts_an_iwae_run_from_an_elbo_model(tmp_path):
    base = tmp_path / "elbo"
    _run(*_argv(**{**TINY, "epochs": 1})[1:], f"--output_dir={base}")
    start = _weights(base / "model.keras")
    tuned = tmp_path / "iwae"
    # One step at a negligible learning rate: the run tests and saves the model it
    # started from.
    metrics = _run(*_argv(**{**TINY, "epochs": 1, "steps_per_epoch": 1, "objective": "iwae",
                             "num_samples": 2, "learning_rate": 1e-9})[1:],
                   f"--init_from={base / 'model.keras'}", f"--output_dir={tuned}")
    for got, want in zip(_weights(tuned / "model.keras"), start):
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert np.isfinite(metrics["test"]["iwae"])


@pytest.mark.slow
def test_a_spatial_hierarchy_in_bfloat16_resumes_after_a_kill(tmp_path):
    """The deep config's settings on a tiny spatial model: killed after step 4,
    resumed by the same call; the export is float32."""
    options = {**TINY, "epochs": 2, "backup_save_freq": 2, "encoder": "resnet",
               "decoder": "resnet", "latent_groups": "7x1,14x1", "latent_channels": 2,
               "cell_channels": 8, "free_bits": 0.1, "global_clipnorm": 100.0,
               "skip_threshold": 1e4, "mixed_precision": "mixed_bfloat16",
               "export": True, "export_dir": str(tmp_path / "exports")}
    output_dir = str(tmp_path / "run")
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES), \
            pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(output_dir, callbacks=[_Kill(1, 2)], **options)
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES):
        metrics = train.train_and_evaluate(output_dir, **options)
    assert metrics["resumed_from"] == {"epoch": 1, "step": 4}
    assert metrics["optimizer_steps"] == 4 + 3 and metrics["skipped_updates"] == 0
    assert {"rate/1", "rate/2"} <= set(metrics["test"])
    loaded = tf.saved_model.load(metrics["export"]["saved_model"])
    images = tf.zeros([2, 28, 28, 1])
    assert loaded.signatures["reconstruct"](images=images)["images"].dtype == tf.float32


@pytest.mark.slow
def test_steps_per_execution_beyond_an_epoch_is_capped_at_the_epoch(tmp_path, capsys):
    """It showed 20/10 in the progress bar, with a negative time."""
    metrics = _run(*_argv(**{**TINY, "epochs": 2, "steps_per_execution": 20,
                             "verbose": 1})[1:], f"--output_dir={tmp_path}/run")
    out = capsys.readouterr().out
    assert ("--steps_per_execution=20 is more than the 3 steps of an epoch; each "
            "compiled call runs 3.") in out
    assert "3/3" in out and "20/3" not in out
    assert metrics["optimizer_steps"] == 2 * 3


@pytest.mark.slow
def test_grey_levels_get_the_discretized_likelihood_and_bits_per_dim(tmp_path, capsys):
    """--likelihood=auto (the default) on 8-bit MNIST not binarized: the discretized
    logistic, written to config.json, and the test ELBO also in bits/dim."""
    metrics = _run(*_argv(**{**TINY, "binarization": "none", "epochs": 1,
                             "steps_per_epoch": 1, "likelihood_components": 2})[1:],
                   f"--output_dir={tmp_path}")
    out = capsys.readouterr().out
    assert "--likelihood=auto: discretized_logistic for the 8-bit pixels of mnist" in out
    with open(tmp_path / "config.json", encoding="utf-8") as f:
        assert json.load(f)["likelihood"] == "discretized_logistic"
    bits = metrics["test"]["bits_per_dim"]
    assert f"nats per image, {bits:.4f} bits/dim" in out
