"""kill -9 in the middle of an epoch, then the same command again: the run resumes.

The command is this file run as a script, `python tests/test_fault_tolerance.py
FLAGS...`: the real `tfvae.train` command line on generated data (256 images made of
4 binary patterns, served through `tfds.testing.mock_data`, learnable in a few steps).
When TFVAE_TEST_HANG=STEP:MARKER is set, the first run to reach optimizer step STEP
writes MARKER and hangs, so that the test can SIGKILL it at a known point; a run that
finds MARKER trains normally, so the second run is the same command. Every run saves
its weights at the start of `fit` and at each backup step beside its output dir.

3 epochs of 8 steps, backups every 5 steps: the kill comes after step 12 (epoch 2),
the backup holds step 10 and its previous copy step 5. Keras resumes a backup made
inside an epoch at the start of that epoch: 10 + 2 * 8 = 26 steps in all.
Runs use --deterministic, so the killed run and an uninterrupted one in this process
agree bit for bit up to the kill. (NaN handling, deterministic weights within one
process and an unreadable backup are tested in-process in test_train.py.)
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tfvae import train
from pattern_data import generated_data

# Killed and resumed command lines: seconds each.
pytestmark = [pytest.mark.slow,
              pytest.mark.usefixtures("op_determinism_off_after")]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--dataset=mnist", "--binarization=static", "--validation_split=test",
         "--encoder_hidden_units=16", "--decoder_hidden_units=16", "--latent_dim=2",
         "--num_samples=10", "--batch_size=32", "--epochs=3", "--optimizer=adam",
         "--learning_rate=0.01", "--backup_save_freq=5", "--seed=0", "--noexport",
         "--deterministic", "--nojit_compile", "--nolog_images", "--verbose=0"]
NUM_EXAMPLES, STEPS_PER_EPOCH, EPOCHS, KILL_AFTER_STEP = 256, 8, 3, 12
TIMEOUT_S = 240  # One TensorFlow import and a short run on a loaded 2-core machine.
UNTRAINED_ELBO = -784 * np.log(2)  # Every pixel at p = 1/2.


class HangOnce(keras.callbacks.Callback):
    """After optimizer step `step`, writes `marker` and sleeps, unless `marker` exists.
    Listed after the backup callback, so the backup of that step is on disk."""

    def __init__(self, step, marker):
        super().__init__()
        self.step, self.marker = int(step), marker

    def on_train_batch_end(self, batch, logs=None):
        if (int(self.model.optimizer.iterations.numpy()) == self.step
                and not os.path.exists(self.marker)):
            with open(self.marker, "w") as f:
                f.write(str(os.getpid()))
            time.sleep(3600)


class RecordWeights(keras.callbacks.Callback):
    """Saves the weights to `{prefix}.start-step{N}.npz` when `fit` starts (after the
    backup callback restored them; N is the optimizer step) and to
    `{prefix}.step{N}.npz` after every `every`-th step."""

    def __init__(self, prefix, every):
        super().__init__()
        self.prefix, self.every = prefix, int(every)

    def _save(self, name):
        np.savez(f"{self.prefix}.{name}.npz", *self.model.get_weights())

    def on_train_begin(self, logs=None):
        self._save(f"start-step{int(self.model.optimizer.iterations.numpy())}")

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step % self.every == 0:
            self._save(f"step{step}")


def _recorded(prefix, name):
    with np.load(f"{prefix}.{name}.npz") as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]


def _command(output_dir):
    return [sys.executable, os.path.abspath(__file__), *FLAGS, f"--output_dir={output_dir}"]


def _start(output_dir, env, log_name):
    stdout = open(f"{output_dir}.{log_name}.out", "w")
    stderr = open(f"{output_dir}.{log_name}.err", "w")
    with stdout, stderr:
        return subprocess.Popen(_command(output_dir), cwd=ROOT, env=env, stdout=stdout,
                                stderr=stderr)


def _logs(output_dir, log_name):
    with open(f"{output_dir}.{log_name}.out") as out, \
            open(f"{output_dir}.{log_name}.err") as err:
        return out.read(), err.read()


def _wait(process, output_dir, log_name, timeout=TIMEOUT_S):
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{' '.join(process.args)} still running after {timeout} s")
    out, err = _logs(output_dir, log_name)
    assert process.returncode == 0, err[-3000:]
    return out, err


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


def _train_in_process(output_dir):
    """The command line's run, in this process, recording weights like the script."""
    trainer = train.trainer_flags()
    trainer(["tfvae.train", *FLAGS])
    options = {**train.options_from_flags(trainer), "output_dir": str(output_dir)}
    with generated_data(NUM_EXAMPLES):
        return train.train_and_evaluate(
            callbacks=[RecordWeights(output_dir, options["backup_save_freq"])], **options)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A run killed with SIGKILL after step 12, then restarted twice with the same
    command: as left, and with its latest backup truncated; and an uninterrupted run
    (in this process)."""
    root = tmp_path_factory.mktemp("fault_tolerance")
    killed, truncated, reference = root / "killed", root / "truncated", root / "reference"
    marker = root / "hung"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "TFVAE_TEST_HANG": f"{KILL_AFTER_STEP}:{marker}",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    processes = []
    try:
        processes.append(_start(killed, env, "first"))
        _train_in_process(reference)  # Meanwhile, the uninterrupted run.

        deadline = time.monotonic() + TIMEOUT_S
        while not marker.exists():
            if processes[0].poll() is not None:
                pytest.fail("the run ended before it could be killed:\n"
                            + _logs(killed, "first")[1][-3000:])
            if time.monotonic() > deadline:
                pytest.fail(f"the run did not reach step {KILL_AFTER_STEP} in {TIMEOUT_S} s")
            time.sleep(0.2)
        backup = killed / "backup"
        assert (backup / "latest.weights.h5").exists()
        assert (backup / "latest.weights.h5.bkp").exists()
        os.kill(processes[0].pid, signal.SIGKILL)
        assert processes[0].wait(timeout=30) == -signal.SIGKILL

        shutil.copytree(killed, truncated)
        latest = truncated / "backup" / "latest.weights.h5"
        with open(latest, "r+b") as f:  # As if killed while writing the backup.
            f.truncate(os.path.getsize(latest) // 2)

        processes += [_start(killed, env, "again"), _start(truncated, env, "again")]
        resumed_logs = _wait(processes[1], killed, "again")
        fallback_logs = _wait(processes[2], truncated, "again")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    return {"killed": killed, "truncated": truncated, "reference": reference,
            "resumed_logs": resumed_logs, "fallback_logs": fallback_logs}


def test_the_same_command_resumes_from_the_backup(runs):
    out, err = runs["resumed_logs"]
    backup = runs["killed"] / "backup"
    assert f"Resuming from the backup in {backup}: epoch 2, optimizer step 10." in out
    assert "Traceback" not in err
    metrics = _metrics(runs["killed"])
    assert metrics["resumed_from"] == {"epoch": 1, "step": 10}
    # The step count continues: the restarted epoch 2 and epoch 3 after step 10.
    assert metrics["optimizer_steps"] == 10 + 2 * STEPS_PER_EPOCH
    with open(runs["killed"] / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["0", "1", "2"]
    assert not backup.exists()  # Deleted once training finished.
    assert (runs["killed"] / "model.keras").exists()
    # The weights fit starts from are those of step 10, bit for bit.
    restored = _recorded(runs["killed"], "start-step10")
    saved = _recorded(runs["killed"], "step10")
    assert len(restored) == len(saved) > 0
    for got, want in zip(restored, saved):
        np.testing.assert_array_equal(got, want)


def test_the_resumed_run_ends_as_good_as_an_uninterrupted_one(runs):
    resumed = _metrics(runs["killed"])["test"]["elbo"]
    reference = _metrics(runs["reference"])
    assert reference["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH
    assert reference["test"]["elbo"] > UNTRAINED_ELBO + 30  # It learned something.
    # Four z-noise seeds of the reference spread over 5% (-264 to -278 nats), and the
    # resumed run takes 2 steps more. (A run of 16 steps from scratch ends 10% off;
    # the restored weights themselves are checked exactly above.)
    assert resumed == pytest.approx(reference["test"]["elbo"], rel=0.08)


def test_deterministic_runs_agree_bit_for_bit_across_processes(runs):
    for step in (5, 10):
        killed = _recorded(runs["killed"], f"step{step}")
        uninterrupted = _recorded(runs["reference"], f"step{step}")
        assert len(killed) == len(uninterrupted) > 0
        for got, want in zip(killed, uninterrupted):
            np.testing.assert_array_equal(got, want)


def test_a_truncated_latest_backup_falls_back_to_the_previous_copy(runs):
    out, err = runs["fallback_logs"]
    backup = runs["truncated"] / "backup"
    assert f"Backup {backup / 'latest.weights.h5'} cannot be read" in err
    assert "falling back to the previous copy" in err
    assert "Traceback" not in err
    assert f"Resuming from the backup in {backup}: epoch 1, optimizer step 5." in out
    metrics = _metrics(runs["truncated"])
    assert metrics["resumed_from"] == {"epoch": 0, "step": 5}
    assert metrics["optimizer_steps"] == 5 + EPOCHS * STEPS_PER_EPOCH
    assert np.isfinite(metrics["test"]["elbo"])
    for got, want in zip(_recorded(runs["truncated"], "start-step5"),
                         _recorded(runs["killed"], "step5")):
        np.testing.assert_array_equal(got, want)


if __name__ == "__main__":  # The training command line, on generated data.
    from absl import app

    def train_and_evaluate(output_dir, _original=train.train_and_evaluate, **options):
        callbacks = [RecordWeights(output_dir, options["backup_save_freq"])]
        if os.environ.get("TFVAE_TEST_HANG"):
            callbacks.append(HangOnce(*os.environ["TFVAE_TEST_HANG"].split(":", 1)))
        return _original(output_dir, callbacks=callbacks, **options)

    train.train_and_evaluate = train_and_evaluate
    with generated_data(NUM_EXAMPLES):
        app.run(train.main, flags_parser=train.parse_flags)
