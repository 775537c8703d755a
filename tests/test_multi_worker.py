"""Two workers on 127.0.0.1 train one model with `strategy="multi_worker"`.

Each worker is this file run as a script (`python tests/test_multi_worker.py DIR
PROBE`) with its own TF_CONFIG: it calls `train_and_evaluate` on generated data (64
images made of 4 binary patterns, served through `tfds.testing.mock_data`, so the
same on every worker and learnable in a few steps) and a probe callback records the
weights and the local batches that `MultiWorkerMirroredStrategy` hands the worker.
A single-worker run of the same global batch runs in the test process meanwhile.

With plain SGD the multi-worker step is the single-worker step only if the workers
split every global batch (DATA sharding after rebatching) and the loss is scaled by
1 / replicas; a worker that read all the data or an unscaled loss would show in the
weights or the losses. The noise of z ~ q(z|x) differs (each replica draws its own),
hence tolerances on what is compared with the single-worker run.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from pattern_data import generated_data, pattern_images

pytestmark = pytest.mark.slow  # two worker processes: seconds each

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES, BATCH_SIZE, EPOCHS = 64, 16, 2
STEPS_PER_EPOCH = NUM_EXAMPLES // BATCH_SIZE
OPTIONS = dict(dataset="mnist", binarization="static", validation_split="",
               encoder_hidden_units=[16], decoder_hidden_units=[16], latent_dim=2,
               batch_size=BATCH_SIZE, epochs=EPOCHS, optimizer="sgd", learning_rate=0.01,
               num_samples=10, export=False, verbose=0, jit_compile=False, log_images=False)
WORKER_TIMEOUT_S = 300  # Two TensorFlow imports on a loaded 2-core machine: ~80 s.
UNTRAINED_LOSS = 784 * np.log(2)  # Every pixel at p = 1/2.


class Probe(keras.callbacks.Callback):
    """Saves to `path` (.npz) the weights at the start and end of `fit` and the local
    batches that the model's strategy hands this worker from the (unshuffled)
    training pipeline."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_train_begin(self, logs=None):
        self._initial = [np.asarray(w) for w in self.model.get_weights()]

    def on_train_end(self, logs=None):
        from tfvae import data  # noqa: PLC0415 -- after the strategy exists

        strategy = self.model.distribute_strategy
        dataset = data.load_dataset(OPTIONS["dataset"], "train", BATCH_SIZE,
                                    binarize=OPTIONS["binarization"], shuffle=False)
        batches = []
        for batch in strategy.experimental_distribute_dataset(dataset):
            local = strategy.experimental_local_results(batch)
            batches.append(np.concatenate([t.numpy() for t in local]))
        arrays = {f"initial_{i}": w for i, w in enumerate(self._initial)}
        arrays.update({f"final_{i}": np.asarray(w)
                       for i, w in enumerate(self.model.get_weights())})
        arrays.update({f"batch_{i}": b for i, b in enumerate(batches)})
        np.savez(self.path, **arrays)


def _load_probe(path):
    with np.load(path) as probe:
        def group(prefix):
            keys = sorted((k for k in probe.files if k.startswith(prefix)),
                          key=lambda k: int(k.rsplit("_", 1)[1]))
            return [probe[k] for k in keys]
        return {name: group(f"{name}_") for name in ("initial", "final", "batch")}


def _history(output_dir):
    with open(os.path.join(output_dir, "history.csv")) as f:
        return list(csv.DictReader(f))


def _metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


def _free_ports(count):
    """Ports free on 127.0.0.1 now (held together so that they differ)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _tail(path, lines=25):
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def _start_workers(output_dir, root):
    """Two workers of one cluster on free loopback ports, writing to `output_dir`, with
    logs and probes in `root`; returns the processes and their log paths."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
           "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    processes, logs = [], []
    try:
        for index in range(2):
            logs.append(root / f"worker{index}.log")
            tf_config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            with open(logs[-1], "w") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), str(output_dir),
                     str(root / f"probe{index}.npz")],
                    cwd=ROOT, env={**env, "TF_CONFIG": json.dumps(tf_config)},
                    stdout=log, stderr=subprocess.STDOUT))
    except BaseException:
        _kill(processes)
        raise
    return processes, logs


def _kill(processes):
    for p in processes:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


def _wait_all(processes, logs, timeout, fail_fast=True):
    """Waits for every process; with `fail_fast`, fails at once, with the log, when
    one fails (the others would wait for it forever). Fails when time is up."""
    deadline = time.monotonic() + timeout
    while any(p.poll() is None for p in processes):
        for p, log in zip(processes, logs):
            if fail_fast and p.poll() not in (None, 0):
                pytest.fail(f"worker exited with {p.returncode}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"workers still running after {timeout} s:\n"
                        + "\n".join(_tail(log) for log in logs))
        time.sleep(0.5)
    if fail_fast:
        for p, log in zip(processes, logs):
            assert p.returncode == 0, _tail(log)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two workers and, meanwhile, a single-worker run of the same global batch."""
    root = tmp_path_factory.mktemp("multi_worker")
    processes, logs = _start_workers(root / "multi", root)
    try:
        from tfvae import train  # noqa: PLC0415

        with generated_data(NUM_EXAMPLES):
            train.train_and_evaluate(str(root / "single"),
                                     callbacks=[Probe(str(root / "probe_single.npz"))],
                                     **OPTIONS)
        _wait_all(processes, logs, WORKER_TIMEOUT_S)
    finally:
        _kill(processes)
    return {
        "root": root,
        "logs": [log.read_text() for log in logs],
        "dirs": [root / "multi", root / "multi" / "workers" / "1", root / "single"],
        "probes": [_load_probe(root / name)
                   for name in ("probe0.npz", "probe1.npz", "probe_single.npz")],
    }


def test_both_workers_finish_and_each_epoch_is_one_pass(runs):
    assert "2 replica(s)" in runs["logs"][0] and "2 replica(s)" in runs["logs"][1]
    for output_dir in runs["dirs"]:
        metrics = _metrics(output_dir)
        assert metrics["steps_per_epoch"] == STEPS_PER_EPOCH
        assert metrics["optimizer_steps"] == EPOCHS * STEPS_PER_EPOCH
        assert [row["epoch"] for row in _history(output_dir)] == ["0", "1"]
    # Only the chief (worker 0) saves the model; worker 1 writes under workers/1.
    assert os.path.exists(runs["dirs"][0] / "model.keras")
    assert not os.path.exists(runs["dirs"][1] / "model.keras")


def test_each_worker_reads_its_half_of_every_global_batch(runs):
    worker0, worker1, single = (probe["batch"] for probe in runs["probes"])
    assert len(worker0) == len(worker1) == len(single) == STEPS_PER_EPOCH
    for half0, half1, whole in zip(worker0, worker1, single):
        assert half0.shape == half1.shape == (BATCH_SIZE // 2, 28, 28, 1)
        np.testing.assert_array_equal(np.concatenate([half0, half1]), whole)
    # One pass: together the workers saw every image once.
    seen = np.concatenate(worker0 + worker1).reshape(NUM_EXAMPLES, -1)
    expected = (pattern_images(NUM_EXAMPLES).reshape(NUM_EXAMPLES, -1) / 255).astype(np.float32)
    np.testing.assert_array_equal(seen[np.lexsort(seen.T)], expected[np.lexsort(expected.T)])


def test_workers_start_from_the_same_weights_and_end_identical(runs):
    worker0, worker1, single = runs["probes"]
    for w0, w1, ws in zip(worker0["initial"], worker1["initial"], single["initial"]):
        np.testing.assert_array_equal(w0, w1)
        np.testing.assert_array_equal(w0, ws)  # --seed fixes the initialization
    for w0, w1 in zip(worker0["final"], worker1["final"]):
        np.testing.assert_array_equal(w0, w1)
    moved = max(float(np.abs(f - i).max())
                for f, i in zip(worker0["final"], worker0["initial"]))
    assert moved > 0.05


def test_loss_and_steps_match_a_single_worker_run_of_the_same_global_batch(runs):
    multi, worker1, single = (_history(d) for d in runs["dirs"])
    test_multi = _metrics(runs["dirs"][0])["test"]["elbo"]
    test_single = _metrics(runs["dirs"][2])["test"]["elbo"]
    # Training made real progress (untrained: -543 nats), so a wrong step shows: the
    # single-worker run with twice the learning rate ends 2% off in epoch-2 loss and
    # 6% in test ELBO, while five z-noise seeds of it spread over 0.5% and 3%.
    assert test_single > -UNTRAINED_LOSS + 30
    np.testing.assert_allclose([float(row["loss"]) for row in multi],
                               [float(row["loss"]) for row in single], rtol=0.01)
    assert test_multi == pytest.approx(test_single, rel=0.04)
    # Both workers log the same numbers: metrics are reduced across workers.
    keys = ("loss", "elbo", "rate", "distortion")
    assert [{k: row[k] for k in keys} for row in multi] == \
        [{k: row[k] for k in keys} for row in worker1]


def test_weight_updates_match_a_single_worker_run(runs):
    multi, _, single = runs["probes"]
    for start, end_multi, end_single in zip(single["initial"], multi["final"],
                                            single["final"]):
        step_multi, step_single = (end_multi - start).ravel(), (end_single - start).ravel()
        ratio = np.linalg.norm(step_multi) / np.linalg.norm(step_single)
        cosine = step_multi @ step_single / (np.linalg.norm(step_multi)
                                             * np.linalg.norm(step_single))
        assert cosine > 0.9 and 2 / 3 < ratio < 1.5, (start.shape, cosine, ratio)
        if start.shape == (784,):  # The decoder's output bias barely feels z's noise.
            assert ratio == pytest.approx(1.0, abs=0.05) and cosine > 0.999


def _save_backup(backup_dir, suffix, step, epoch, batch):
    """A BackupAndRestore file pair for the workers' model at optimizer `step`."""
    from tfvae import builders  # noqa: PLC0415

    model = builders.build_model((28, 28, 1), **{
        k: OPTIONS[k] for k in ("encoder_hidden_units", "decoder_hidden_units",
                                "latent_dim", "num_samples")})
    model.compile(optimizer=builders.build_optimizer(OPTIONS["optimizer"], 0.01))
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(step)
    model.save_weights(str(backup_dir / "new.weights.h5"))  # Keras wants this suffix.
    os.replace(backup_dir / "new.weights.h5", backup_dir / f"latest.weights.h5{suffix}")
    (backup_dir / f"training_metadata.json{suffix}").write_text(
        json.dumps({"epoch": epoch, "batch": batch}))


def test_workers_that_resume_different_steps_stop_with_one_error(tmp_path):
    # Each worker backed up steps 2 and 4 of epoch 1 (--backup_save_freq=2); worker 1's
    # latest file is truncated (killed while saving), so it falls back to step 2 while
    # worker 0 resumes step 4. Both would restart epoch 1 and train on to the end
    # with different weights: Keras does not synchronize restored weights.
    output_dir = tmp_path / "run"
    for worker_dir in (output_dir, output_dir / "workers" / "1"):
        (worker_dir / "backup").mkdir(parents=True)
        _save_backup(worker_dir / "backup", ".bkp", step=2, epoch=0, batch=1)
        _save_backup(worker_dir / "backup", "", step=4, epoch=0, batch=3)
    latest = output_dir / "workers" / "1" / "backup" / "latest.weights.h5"
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    processes, logs = _start_workers(output_dir, tmp_path)
    try:
        _wait_all(processes, logs, WORKER_TIMEOUT_S, fail_fast=False)
    finally:
        _kill(processes)
    for process, log in zip(processes, logs):
        text = log.read_text()
        assert process.returncode == 1, _tail(log)
        assert "BackupError: The workers resumed from backups of different optimizer " \
            "steps [4, 2]" in text, _tail(log)
    assert "falling back to the previous copy" in logs[1].read_text()


if __name__ == "__main__":  # One worker: OUTPUT_DIR PROBE_PATH, TF_CONFIG set.
    from tfvae import train

    with generated_data(NUM_EXAMPLES):
        train.train_and_evaluate(sys.argv[1], strategy="multi_worker",
                                 callbacks=[Probe(sys.argv[2])], **OPTIONS)
