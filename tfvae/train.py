"""Train, evaluate and export a VAE: `python -m tfvae.train --flagfile=configs/mnist.cfg`.

Flags given after `--flagfile` override it. The same run from Python (a notebook):

    from tfvae.train import train_and_evaluate
    metrics = train_and_evaluate("/tmp/run", dataset="binarized_mnist", epochs=10,
                                 tfds_manual_dir="/path/to/binarized_mnist")

`train_and_evaluate` takes every flag as a keyword argument of the same name and
default (the model options' defaults are `builders.build_model`'s and `VAE`'s);
only `main` reads FLAGS. What a run writes to `output_dir` is listed in `rundir.py`.

The model is exported with `tfvae.export.export_model` to export_dir/export_name/N.

A NaN or Inf loss stops training at once: the diverged epoch is never saved as the
best model nor backed up, the run exits with status 1 and a message saying where
the last good checkpoint is. Bad flags, data or directories end the run with one
line on stderr and status 1 before any training.

Multi-worker: set TF_CONFIG on each worker and pass --strategy=multi_worker; the
batch size is global, each worker reads its share of every batch (DATA sharding),
the chief (task 0) writes output_dir and the others output_dir/workers/<task>.
"""

import importlib.util
import json
import math
import os
import statistics
import sys
import time
import types

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from tfvae import builders, callbacks as vae_callbacks, checks, cli, data, distributions
from tfvae import evaluate, export as export_lib, heads, losses, objectives
from tfvae import projector
from tfvae import rundir, user_files, warmstart

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# Test images whose posterior codes the run writes for TensorBoard's projector.
PROJECTOR_IMAGES = 2000
# build_model's options; a backup can only resume the model they describe.
MODEL_OPTIONS = tuple(builders.MODEL_DEFAULTS)
# The trainer's model defaults: the library's, but the likelihood fits the data
# (`_pick_likelihood`).
MODEL_DEFAULTS = {**builders.MODEL_DEFAULTS, "likelihood": "auto"}


class ConfigError(ValueError):
    """Bad options, data or directories, found before training starts."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message says where the good checkpoint is."""


class ExportFailed(RuntimeError):
    """The export failed after training; metrics.json and model.keras were written."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT); the message says what was kept and how to go on."""


def _save_freq(value):
    if value in ("epoch", None, ""):
        return "epoch"
    try:
        steps = int(value)
    except (TypeError, ValueError):
        steps = 0
    if steps < 1:
        raise ValueError(f"backup_save_freq must be 'epoch' or a positive number of "
                         f"steps, got {value!r}.")
    return steps


def _check_writable(directory, what):
    try:
        os.makedirs(directory, exist_ok=True)
        probe = os.path.join(directory, f".write_test_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(f"{what} {directory} is not writable: "
                         f"{error.strerror or error}.") from None


def _check_same_run(directory, config, resuming, overwrite):
    """A run directory belongs to one run (its model and dataset): another run there,
    finished or not, is refused unless `overwrite`, which deletes the old run's files
    first. The same run goes on: from its backup when it has one."""
    previous = rundir.read_config(directory)
    # An option missing from an older config.json had its default.
    before = {key: previous.get(key, DEFAULTS[key])
              for key in ("dataset", "conditional", *MODEL_OPTIONS)}
    changed = [f"{key}: {value!r} -> {config[key]!r}" for key, value in before.items()
               if json.loads(json.dumps(value)) != json.loads(json.dumps(config[key]))]
    if not previous or not changed:
        return resuming
    if overwrite:
        rundir.clear(directory)
        print(f"--overwrite: deleted the run of another configuration in {directory}.",
              flush=True)
        return False
    raise ValueError(
        f"{directory} holds {'a backup of ' if resuming else ''}a different run "
        f"({'; '.join(changed)}); use another --output_dir, or pass --overwrite to "
        "replace it.")


def _steps_per_epoch(train_ds, num_examples, batch_size, cap):
    if cap:
        return int(cap)
    if num_examples:
        return math.ceil(num_examples / batch_size)
    cardinality = int(train_ds.cardinality())
    return cardinality if cardinality > 0 else None


def _divergence_message(diverged, best_path, backup_dir):
    where = f"at epoch {diverged['epoch'] + 1}"
    if diverged["batch"] is not None:
        where += f", batch {diverged['batch'] + 1}"
    loss = "validation loss" if diverged.get("key") == "val_loss" else "loss"
    message = f"Training stopped: the {loss} became {diverged['loss']} {where}."
    if os.path.exists(best_path):
        keras.saving.load_model(best_path)  # Raises if the good checkpoint is broken.
        message += f" The best checkpoint so far is intact at {best_path}."
    else:
        message += " No checkpoint had been saved yet."
    if os.path.exists(backup_dir):
        message += f" The last good backup is kept in {backup_dir}."
    return message + " Try a lower --learning_rate or --clipnorm."


def _interrupt_message(backup_dir, epoch):
    """Where the backup of an interrupted `fit` is, and that the same command resumes."""
    metadata = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(metadata):
        return (f"interrupted in epoch {epoch + 1}, before the first backup; the same "
                "command starts the run again.")
    with open(metadata) as f:
        resume_epoch = json.load(f)["epoch"] + 1
    return (f"interrupted in epoch {epoch + 1}; the backup is in {backup_dir}: the same "
            f"command resumes from it (at epoch {resume_epoch}).")


def _export_failure(error, paths):
    return (f"the export failed ({type(error).__name__}: {checks.first_line(error)}); "
            "nothing was left in "
            f"the export dir. The test figures are in {paths['metrics.json']} and the "
            f"model in {paths['model.keras']}: export it with python -m tools.export "
            f"--checkpoint={paths['model.keras']}.")


def _warmup_steps(requested, total_steps):
    """The rate weight's warm-up, ended by half of the run at the latest.

    A run that stops while the weight is still below beta reports a bound it never
    optimized (one epoch of configs/mnist.cfg: -166 nats at weight 0.1); capped at
    half of its steps, every run ends training the bound it reports. Long runs keep
    the warm-up they asked for.
    """
    if not requested or not total_steps or requested <= total_steps // 2:
        return requested
    capped = max(1, total_steps // 2)
    print(f"The KL warm-up ({requested} steps) is longer than half of this run "
          f"({total_steps} steps); it ends at step {capped} instead.", flush=True)
    return capped


def _steps_per_execution(requested, steps_per_epoch):
    """Steps per compiled call, at most an epoch's: beyond it Keras's progress bar
    counts past the epoch (20/10) and shows a negative time."""
    if not steps_per_epoch or requested <= steps_per_epoch:
        return requested
    print(f"--steps_per_execution={requested} is more than the {steps_per_epoch} steps "
          f"of an epoch; each compiled call runs {steps_per_epoch}.", flush=True)
    return steps_per_epoch


class _Run:
    """What the steps of one run share: its options (as attributes of `options`),
    where it writes, its data and model, and what a Ctrl-C leaves."""

    def __init__(self, config):
        self.config = config
        self.options = types.SimpleNamespace(**config)
        self.on_interrupt = ("interrupted before training started; nothing was trained: "
                             "the same command starts the run.")


def train_and_evaluate(
        output_dir="runs/vae", *,
        # data
        dataset="binarized_mnist", train_split="train", validation_split="validation",
        test_split="test", tfds_data_dir=None, tfds_manual_dir=None,
        binarization="static", batch_size=100, conditional=False,
        # optimization
        epochs=10, steps_per_epoch=0, optimizer="adam", learning_rate=1e-3,
        lr_schedule="constant", lr_decay_rate=0.5, lr_decay_epochs=1.0, clipnorm=0.0,
        global_clipnorm=0.0, skip_threshold=0.0, use_ema=False, ema_momentum=0.99,
        early_stopping_patience=0, init_from="",
        # runtime
        seed=0, deterministic=False, strategy="default", tpu="", jit_compile=True,
        steps_per_execution=1, overwrite=False,
        mixed_precision="none", backup_save_freq="epoch", log_images=True, verbose=1,
        curve_points_per_decade=0, curve_images=1000, curve_nll_samples=0,
        # export
        export=True, export_dir="saved_models", export_name="", export_version=0,
        callbacks=(), **model_options):
    """Trains a VAE with `fit`, evaluates it on the test split, saves and exports it.

    Every argument but `callbacks` (extra Keras callbacks) is the flag of the same
    name; see `python -m tfvae.train --helpfull`. `model_options` are those of
    `builders.build_model` (networks, prior, latent sizes, objective). Returns the
    dict written to metrics.json. Raises `ConfigError` for bad options, data or
    directories (before training), `vae_callbacks.BackupError` for an unreadable
    backup, `TrainingDiverged` when the loss becomes NaN or Inf, `Interrupted` (a
    KeyboardInterrupt) on Ctrl-C, saying where the backup is, and `ExportFailed`
    when the export fails (metrics.json is written first).
    """
    run_options = {k: v for k, v in locals().items()
                   if k not in ("callbacks", "model_options")}
    unknown = sorted(set(model_options) - set(MODEL_OPTIONS))
    if unknown:
        raise ConfigError(f"Unknown option(s) {', '.join(unknown)}; see "
                          "python -m tfvae.train --helpfull.")
    run = _Run(json.loads(json.dumps(
        {**run_options, **MODEL_DEFAULTS, **model_options}, default=list)))
    previous_policy = keras.mixed_precision.global_policy()
    try:
        try:  # Every mistake found here is a one-line ConfigError.
            _setup(run)
        except (ValueError, OSError, data.DataUnavailableError) as error:
            raise ConfigError(str(error)) from error
        _fit(run, _callbacks(run) + list(callbacks))
        return _finish(run)
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Interrupted):
            raise
        raise Interrupted(run.on_interrupt) from None
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)
        rundir.release(getattr(run, "lock", None))


# -- setup -------------------------------------------------------------------------

def _setup(run):
    """The strategy, the directories, the data, the compiled model [and the curve]."""
    o = run.options
    builders.check_sizes(**{k: run.config[k] for k in MODEL_OPTIONS})
    checks.choice("mixed_precision", o.mixed_precision, MIXED_PRECISION)
    run.save_freq = _save_freq(o.backup_save_freq)
    # A multi-worker strategy must exist before any other TensorFlow work.
    run.strategy = builders.build_strategy(o.strategy, o.tpu)
    keras.utils.set_random_seed(o.seed)
    if o.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.mixed_precision.set_global_policy(
        "float32" if o.mixed_precision == "none" else o.mixed_precision)
    run.info = data.dataset_info(o.dataset, o.tfds_data_dir, o.tfds_manual_dir)
    _pick_likelihood(run)
    _prepare_directories(run)
    _load_data(run)
    _build_model(run)
    run.curve = _bound_curve(run) if o.curve_points_per_decade and run.chief else None
    user_files.write_json(run.paths[rundir.CONFIG], run.config)
    kind = "a conditional VAE" if o.conditional else "a VAE"
    print(f"Training {kind} ({run.model.count_params():,} weights) on {o.dataset}"
          f"[{o.train_split}], {run.steps or '?'} steps per epoch of {o.batch_size} "
          f"images, {run.strategy.num_replicas_in_sync} replica(s); writing to "
          f"{run.work_dir}.", flush=True)


def _pick_likelihood(run):
    """--likelihood=auto: the likelihood of the data's pixels as binarized
    (`distributions.default_likelihood`), written to config.json as picked."""
    o = run.options
    if o.likelihood != "auto":
        return
    o.likelihood = run.config["likelihood"] = distributions.default_likelihood(
        run.info.pixels, o.binarization)
    print(f"--likelihood=auto: {o.likelihood} for the {run.info.pixels or 'unknown'} "
          f"pixels of {o.dataset} (binarization {o.binarization}).", flush=True)


def _prepare_directories(run):
    o = run.options
    run.chief = builders.is_chief(run.strategy)
    run.work_dir = o.output_dir if run.chief else os.path.join(
        o.output_dir, "workers", str(run.strategy.cluster_resolver.task_id))
    _check_writable(run.work_dir, "Output dir")
    run.paths = rundir.paths(run.work_dir)
    run.export_name = o.export_name or \
        f"{'cvae' if o.conditional else 'vae'}_{data.short_name(o.dataset)}"
    if o.export and run.chief:  # Fail now, not after hours of training.
        _check_writable(o.export_dir, "Export dir")
        export_lib.version_folder(o.export_dir, run.export_name, o.export_version or None)
    run.lock = rundir.claim(run.work_dir)
    run.resuming = _check_same_run(
        run.work_dir, run.config, os.path.exists(os.path.join(
            run.paths[rundir.BACKUP], "latest.weights.h5")), o.overwrite)


def _load_data(run):
    """Each split's pipeline, and its first batch checked before any training.

    The first batch comes from an uncached twin of the split: reading one batch of a
    `cache()`d pipeline would leave a partial cache behind.
    """
    o = run.options
    if not o.train_split or not o.test_split:
        raise ValueError("train_split and test_split must be set.")
    if o.conditional and not run.info.num_classes:
        raise ValueError(f"--conditional needs labels, and {o.dataset} has none (use a "
                         "labelled dataset: fashion_mnist, mnist, a folder: of class "
                         "subfolders or npy: with ,labels=).")
    run.load = load = dict(binarize=o.binarization, data_dir=o.tfds_data_dir,
                           manual_dir=o.tfds_manual_dir, seed=o.seed,
                           drop_remainder=o.strategy == "tpu",
                           with_labels="inputs" if o.conditional else False)
    run.data, run.first_batch = {}, {}
    for role, split in (("train", o.train_split), ("validation", o.validation_split),
                        ("test", o.test_split)):
        if not split:
            continue
        twin = data.load_dataset(o.dataset, split, o.batch_size, shuffle=False,
                                 cache=False, **load)
        run.first_batch[role] = data.check_images(twin.take(1), run.info.image_shape,
                                                  f"{o.dataset}[{split}]",
                                                  run.info.num_classes)
        if role == "train":
            run.steps = _steps_per_epoch(twin, run.info.num_examples.get(split),
                                         o.batch_size, o.steps_per_epoch)
        run.data[role] = data.load_dataset(
            o.dataset, split, o.batch_size, shuffle=role == "train",
            repeat=role == "train" and bool(o.steps_per_epoch), **load)


def _build_model(run):
    o = run.options
    total_steps = run.steps * o.epochs if run.steps else None
    model_options = {k: run.config[k] for k in MODEL_OPTIONS}
    model_options["kl_warmup_steps"] = _warmup_steps(o.kl_warmup_steps, total_steps)
    run.steps_per_execution = _steps_per_execution(o.steps_per_execution, run.steps)
    with run.strategy.scope():
        model = builders.build_model(
            run.info.image_shape, num_classes=run.info.num_classes if o.conditional else 0,
            **model_options)
        lr = builders.build_learning_rate(
            o.learning_rate, o.lr_schedule, total_steps=total_steps,
            steps_per_epoch=run.steps, decay_rate=o.lr_decay_rate,
            decay_epochs=o.lr_decay_epochs)
        model.compile(optimizer=builders.build_optimizer(
            o.optimizer, lr, clipnorm=o.clipnorm, global_clipnorm=o.global_clipnorm,
            skip_threshold=o.skip_threshold, use_ema=o.use_ema,
            ema_momentum=o.ema_momentum), jit_compile=o.jit_compile,
            steps_per_execution=run.steps_per_execution)
    _warm_start(run, model)
    # A forward pass on two images finds bad option combinations now.
    model.compute_loss(y_pred=model(_head(run.first_batch["train"], 2)))
    model.reset_metrics()
    run.model = model


def _warm_start(run, model):
    """--init_from: the weights of another model (`warmstart`), unless the run resumes
    (its backup is newer); the report goes to warm_start.json, and metrics.json."""
    o, report_path = run.options, run.paths[rundir.WARM_START]
    if run.resuming:  # its warm_start.json, if any, stays
        if o.init_from:
            print(f"--init_from={o.init_from} is ignored: the run resumes from its "
                  f"backup in {run.paths[rundir.BACKUP]}.", flush=True)
        return
    if os.path.exists(report_path):  # an earlier run's, in this directory
        os.remove(report_path)
    if not o.init_from:
        return
    try:
        report = warmstart.warm_start(model, o.init_from)
    except ValueError as error:
        raise ValueError(f"--init_from: {error}") from None
    print(report.summary(), flush=True)
    user_files.write_json(report_path, report.as_dict())


# -- callbacks and fit ----------------------------------------------------------------

def _head(batch, count):
    """The first `count` rows of a batch: images, or a conditional model's inputs."""
    return tf.nest.map_structure(lambda rows: rows[:count], batch)


def _callbacks(run):
    """Guard, timer, backup, [EMA swap], best checkpoint, [early stop], logs."""
    o, paths = run.options, run.paths
    # The bound being maximized: the k-sample IWAE bound when that is the objective.
    bound = run.model.training_objective.bound
    run.monitor = f"val_{bound}" if "validation" in run.data else bound
    run.guard = vae_callbacks.NonFiniteGuard()
    run.timer = vae_callbacks.EpochTimer(o.batch_size)
    run.backup = vae_callbacks.Backup(paths[rundir.BACKUP], save_freq=run.save_freq,
                                      double_checkpoint=True)
    cbs = [run.guard, run.timer, run.backup]
    if o.use_ema:  # After the backup, which must store the raw weights.
        cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    run.best = vae_callbacks.BestCheckpoint(
        paths[rundir.BEST], run.monitor, mode="max", verbose=int(o.verbose > 0),
        initial_best=rundir.best_saved(run.work_dir, run.monitor) if run.resuming
        else None, record_path=paths[rundir.BEST_RECORD])
    cbs.append(run.best)
    if o.early_stopping_patience:
        cbs.append(keras.callbacks.EarlyStopping(
            monitor=run.monitor, mode="max", patience=o.early_stopping_patience,
            restore_best_weights=True, verbose=int(o.verbose > 0)))
    if importlib.util.find_spec("tensorboard") is None:  # TF 2.21 dropped the dep
        logging.warning("TensorBoard is not installed; no TensorBoard logs "
                        "(pip install tensorboard).")
    else:
        cbs.append(keras.callbacks.TensorBoard(paths[rundir.LOGS], write_graph=False,
                                               profile_batch=0))
        if o.log_images:
            reference = _head(run.first_batch.get("validation",
                                                  run.first_batch["train"]), 8)
            cbs.append(vae_callbacks.ImageGrid(
                os.path.join(paths[rundir.LOGS], "images"), reference))
    cbs.append(vae_callbacks.History(paths[rundir.HISTORY], append=run.resuming))
    if run.curve:
        cbs.append(run.curve)
    return cbs


def _bound_curve(run):
    """`BoundCurve` on seeded random subsets of the train and test splits (the test
    rows of binarized MNIST are ordered: never a prefix), at log-spaced points up to
    the run's last step."""
    o = run.options
    if not run.steps:
        raise ValueError("--curve_points_per_decade needs a known number of steps per "
                         "epoch: set --steps_per_epoch.")
    images = {part: _random_subset(run, split, o.curve_images)
              for part, split in (("train", o.train_split), ("test", o.test_split))}
    examples_per_step = o.batch_size
    # From the first batch end a point can be taken at (steps_per_execution steps).
    points = vae_callbacks.log_spaced(run.steps * o.epochs * examples_per_step,
                                      o.curve_points_per_decade,
                                      first=examples_per_step * run.steps_per_execution)
    return vae_callbacks.BoundCurve(run.paths[rundir.CURVE], images, examples_per_step,
                                    points, o.curve_nll_samples, seed=o.seed,
                                    resume=run.resuming)


def _random_subset(run, split, count):
    """`count` rows of `split` (all when it has no more), drawn with the run's seed."""
    o = run.options
    index = data.random_rows(run.info.num_examples.get(split), count, o.seed)
    keep = None if index is None else set(index.tolist())
    ds = data.load_dataset(o.dataset, split, 1000, shuffle=False, cache=False,
                           **{**run.load, "drop_remainder": False})
    rows, start = [], 0
    for batch in ds:
        batch = tf.nest.map_structure(lambda tensor: tensor.numpy(), batch)
        size = len(tf.nest.flatten(batch)[0])
        index = [i for i in range(size) if keep is None or start + i in keep]
        rows.append(tf.nest.map_structure(lambda rows: rows[index], batch))
        start += size
    return tf.nest.map_structure(lambda *parts: np.concatenate(parts), *rows)


def _fit(run, cbs):
    o = run.options
    start = time.perf_counter()
    try:
        run.model.fit(run.data["train"], epochs=o.epochs,
                      steps_per_epoch=o.steps_per_epoch or None,
                      validation_data=run.data.get("validation"), callbacks=cbs,
                      verbose=o.verbose, shuffle=False)
    except KeyboardInterrupt:
        raise Interrupted(_interrupt_message(run.paths[rundir.BACKUP],
                                             run.guard.epoch)) from None
    run.on_interrupt = (
        f"interrupted after training, while testing or exporting; the trained model is "
        f"in {run.paths[rundir.BEST]} (no export was left half-written): test or "
        "export it with tools.evaluate or tools.export.")
    run.train_time = time.perf_counter() - start
    run.optimizer_steps = int(run.model.optimizer.iterations.numpy())  # before best.keras
    skipped = getattr(run.model.optimizer, "skipped_updates", None)
    run.skipped_updates = None if skipped is None else int(skipped.numpy())
    if run.guard.diverged:
        raise TrainingDiverged(_divergence_message(
            run.guard.diverged, run.paths[rundir.BEST], run.paths[rundir.BACKUP]))


# -- finish: test, save, export ---------------------------------------------------------

def _finish(run):
    o, paths = run.options, run.paths
    metrics = _summary(run, _test(run))
    if run.chief:
        user_files.save_model_whole(run.model, paths[rundir.FINAL])
    # Written before the extras or the export can fail.
    user_files.write_json(paths[rundir.METRICS], metrics)
    if run.chief and _end_of_run_extra(run, metrics, "projector", _write_projector):
        user_files.write_json(paths[rundir.METRICS], metrics)
    if run.chief and o.export:
        try:
            metrics["export"] = export_lib.export_model(
                run.model, o.export_dir, run.export_name,
                version=o.export_version or None, metadata={
                    "dataset": o.dataset, "class_names": run.info.class_names})
        except Exception as error:  # noqa: BLE001 -- one line, figures kept
            metrics["export_error"] = f"{type(error).__name__}: {error}"
            user_files.write_json(paths[rundir.METRICS], metrics)
            raise ExportFailed(_export_failure(error, paths)) from error
        user_files.write_json(paths[rundir.METRICS], metrics)
    return metrics


def _end_of_run_extra(run, metrics, name, write):
    """`write(run)`, an extra of the run's end (the projector's files): its failure is
    one warning line and `metrics["extra_errors"][name]`, never the loss of the
    results. True when it failed."""
    try:
        write(run)
    except Exception as error:  # noqa: BLE001 -- the results matter more
        line = f"{type(error).__name__}: {checks.first_line(error)}"
        metrics.setdefault("extra_errors", {})[name] = line
        logging.warning("The %s was not written (%s); the results are kept in %s.",
                        name, line, run.paths[rundir.METRICS])
        return True
    return False


def _test(run):
    """Test figures of the best checkpoint's weights."""
    o = run.options
    if os.path.exists(run.paths[rundir.BEST]):
        run.model.load_weights(run.paths[rundir.BEST])
    test = run.model.evaluate(run.data["test"], return_dict=True, verbose=0)
    test = {k: float(v) for k, v in test.items()}
    unit = (f", {test['bits_per_dim']:.4f} bits/dim" if "bits_per_dim" in test else
            ", a log-density, not a log-probability" if o.likelihood == "gaussian" else "")
    print(f"Test ELBO on {o.dataset}[{o.test_split}]: {test['elbo']:.3f} nats per image"
          f"{unit} (rate {test['rate']:.3f}, distortion {test['distortion']:.3f}).",
          flush=True)
    return test


def _write_projector(run, count=PROJECTOR_IMAGES):
    """The posterior codes of `count` test images drawn with the run's seed (not the
    first ones: test rows can be ordered), and their labels for a conditional model,
    for TensorBoard's embedding projector (`tfvae.projector`)."""
    if importlib.util.find_spec("tensorboard") is None:
        return
    subset = tf.nest.map_structure(lambda rows: rows[:count],
                                   _random_subset(run, run.options.test_split, count))
    images = subset["images"] if isinstance(subset, dict) else subset
    codes = np.concatenate([run.model.code(batch).numpy()
                            for batch in evaluate.batches(subset, 500)])
    labels = subset["labels"] if isinstance(subset, dict) else None
    path = os.path.join(run.paths[rundir.LOGS], "projector")
    projector.write_projector(path, codes, images, labels, run.info.class_names)
    print(f"Posterior codes of {len(codes)} test images for TensorBoard's projector: "
          f"tensorboard --logdir {run.paths[rundir.LOGS]}", flush=True)


def _summary(run, test):
    """What metrics.json says about the run."""
    o, timer = run.options, run.timer
    best = run.best.best if run.best.best_epoch else None
    return {
        "dataset": o.dataset,
        "class_names": run.info.class_names,  # for tools.export of the run directory
        "test_split": o.test_split,
        "test": test,
        f"best_{run.monitor}": None if best is None else float(best),
        "best_epoch": run.best.best_epoch,
        "epochs": o.epochs,
        "steps_per_epoch": run.steps,
        "optimizer_steps": run.optimizer_steps,
        "skipped_updates": run.skipped_updates,
        "resumed_from": run.backup.resumed_from,
        "warm_start": rundir.read_json(run.paths[rundir.WARM_START]),
        "train_time_s": run.train_time,
        "epoch_time_s": timer.times,
        "images_per_s": timer.rates,
        "median_images_per_s": statistics.median(timer.rates) if timer.rates else None,
        "paths": {k: run.paths[k] for k in (rundir.BEST, rundir.FINAL, rundir.HISTORY,
                                            rundir.LOGS)},
    }


# -- command line ------------------------------------------------------------------

# Every flag's default: train_and_evaluate's own, then the model's (build_model, VAE).
DEFAULTS = {**{name: default for name, default in
               builders.keyword_defaults(train_and_evaluate).items()
               if name != "callbacks"}, **MODEL_DEFAULTS}
# The options with a fixed set of values, from the tuples the library checks them with.
CHOICES = {
    "binarization": ("static", "dynamic", "none"), "encoder": builders.NETWORKS,
    "decoder": builders.NETWORKS, "posterior": heads.POSTERIORS,
    "likelihood": ("auto", *distributions.LIKELIHOODS), "prior": builders.PRIORS,
    "kl": objectives.KL_METHODS, "objective": tuple(losses.LOSSES),
    "gradient_estimator": losses.GRADIENT_ESTIMATORS,
    "mmd_kernel": objectives.MMD_KERNELS, "optimizer": tuple(builders.OPTIMIZERS),
    "lr_schedule": builders.LR_SCHEDULES, "strategy": builders.STRATEGIES,
    "mixed_precision": MIXED_PRECISION,
}


# Every flag's help; its kind and default come from DEFAULTS, its choices from CHOICES.
HELP = {
    "output_dir": "Checkpoints, backups, TensorBoard logs, history and metrics.",
    "overwrite": "Replace the run of another configuration (model or dataset) "
        "that --output_dir holds; without it such a directory is refused.",
    # data
    "dataset": f"TFDS name: {', '.join(data.SUPPORTED)} or any TFDS image dataset; "
        "or folder:DIR (PNG/JPEG) or npy:FILE.npy (see tfvae.data).",
    "train_split": "TFDS split for training.",
    "validation_split": "Split for validation and best checkpoints ('' for none; "
        "mnist has no 'validation': use e.g. 'train[50000:]' with "
        "--train_split='train[:50000]').",
    "test_split": "Split for the final test.",
    "tfds_data_dir": "Where TFDS keeps prepared datasets (TFDS default if unset).",
    "tfds_manual_dir": "Directory with the dataset's source files, for offline "
        "preparation (binarized_mnist: binarized_mnist_{train,valid,test}.amat).",
    "binarization": "static: one fixed Bernoulli draw per image; dynamic: a new "
        "draw every epoch; none: grey levels in [0, 1]. binarized_mnist is already "
        "binary.",
    "batch_size": "Global batch size (summed over replicas and workers).",
    "conditional": "Train a conditional VAE on the dataset's labels: q(z|x,y), "
        "p(x|z,y) (and p(z|y) with --prior=conditional); sample by class.",
    # model
    "encoder": "Encoder network.",
    "decoder": "Decoder network.",
    "encoder_hidden_units": "Dense layer sizes of the encoder.",
    "decoder_hidden_units": "Dense layer sizes of the decoder.",
    "encoder_filters": "Channels of the conv encoder's stride-2 convolutions.",
    "decoder_filters": "Channels of the conv decoder's transposed convolutions.",
    "activation": "Hidden activation.",
    "dropout": "Dropout after each hidden layer (MLP networks only).",
    "latent_dim": "Size of z (of the top layer z_L in a hierarchy).",
    "top_down_latent_dims": "Sizes of the stochastic layers below the top, top "
        "first ('' for one layer; '40' for a two-level hierarchy).",
    "top_down_hidden_units": "Dense layer sizes of each top-down block (state and "
        "posterior merge).",
    "latent_groups": "Spatial latents (--encoder=--decoder=resnet): the groups, "
        "top first, as resolution x residual cells, e.g. '7x2,14x2' (tfvae/blocks.py).",
    "latent_channels": "Channels of each spatial latent group.",
    "cell_channels": "Channels of the residual cells (resnet).",
    "cell_bottleneck": "Channels inside each residual cell (0: half of "
        "--cell_channels).",
    "output_cells": "Residual cells at full resolution in the resnet decoder.",
    "autoregressive_layers": "Masked convolutions of a PixelCNN head over the resnet "
        "decoder's Bernoulli logits: each pixel then also depends on the pixels before "
        "it (tfvae/pixelcnn.py); 0: the factorized likelihood. Starts as the factorized "
        "model, so --init_from may name one without the head.",
    "autoregressive_channels": "Channels of the PixelCNN head's masked "
        "convolutions.",
    "posterior": "Posterior head of every layer: diagonal Gaussian or IAF.",
    "flow_steps": "Autoregressive (MADE) steps of an IAF posterior.",
    "flow_hidden_units": "Hidden units of each IAF step.",
    "likelihood": "Pixel likelihood p(x|z): bernoulli (binary pixels), gaussian "
        "(a density of real values) or discretized_logistic (the 256 levels of 8-bit "
        "images, reported also in bits/dim; tfvae/discretized.py); auto: the one of "
        "the data as binarized (bernoulli for binary pixels, discretized_logistic for "
        "8-bit levels, gaussian for real values).",
    "likelihood_components": "Mixture components of the discretized logistic "
        "likelihood (per pixel; 10 as PixelCNN++ and VDVAE).",
    "prior": "Prior p(z).",
    "prior_components": "Mixture components (default 10) or VampPrior "
        "pseudo-inputs (default 500); 0 for the default.",
    "num_samples": "Samples of z per image (L for the ELBO, k for IWAE).",
    "kl": "Rate estimator: closed form where TFP has one (auto), or sampled.",
    "context_dropout": "Share of training labels replaced by no label, so that a "
        "conditional model also learns p(x) and can sample with --guidance "
        "(classifier-free guidance; 0.1 as Ho & Salimans 2022).",
    "objective": "Objective.",
    "gradient_estimator": "Encoder gradient estimator.",
    "beta": "Weight of the rate (beta-VAE).",
    "kl_warmup_steps": "Optimizer steps of the linear warm-up of the rate weight to "
        "beta (at most half of the run's steps).",
    "free_bits": "Minimum rate per latent dimension in nats (0: off).",
    "info_alpha": "InfoVAE alpha.",
    "info_lambda": "InfoVAE lambda.",
    "mmd_kernel": "InfoVAE MMD kernel.",
    # optimization
    "epochs": "Training epochs.",
    "steps_per_epoch": "Cap on steps per epoch (0: one pass over the training "
        "split).",
    "optimizer": "Optimizer.",
    "learning_rate": "Initial learning rate.",
    "lr_schedule": "constant; cosine: decay to 0 over all epochs; exponential: "
        "times lr_decay_rate every lr_decay_epochs (smoothly, per step).",
    "lr_decay_rate": "Factor of the exponential schedule.",
    "lr_decay_epochs": "Period in epochs of the exponential schedule.",
    "clipnorm": "Clip each gradient tensor to this norm (0: off).",
    "global_clipnorm": "Clip the norm of all gradients together to this (0: off).",
    "skip_threshold": "Skip a whole update whose gradient norm exceeds this, or is "
        "not finite (0: off); metrics.json counts the skipped updates.",
    "use_ema": "Keep an exponential moving average of the weights; validation, "
        "checkpoints and the final model use it.",
    "ema_momentum": "EMA momentum.",
    "early_stopping_patience": "Stop after this many epochs without a better "
        "validation bound (ELBO, or the IWAE bound with --objective=iwae) (0: off).",
    "init_from": "Start a new run from the weights of a saved model: a .keras file "
        "or a run directory (its best.keras, else model.keras). Weights are matched by "
        "path and shape, so the architecture may differ by added or changed layers "
        "(which keep their initialisation) and the objective may differ (fine-tune an "
        "ELBO model on the IWAE bound); see tfvae/warmstart.py. No optimizer state is "
        "copied. Ignored when the run resumes from its backup.",
    # runtime
    "seed": "Seeds weights, shuffling and binarization.",
    "deterministic": "Deterministic ops (tf.config.experimental."
        "enable_op_determinism, for the whole process; Keras then turns XLA off): two "
        "runs with one seed give identical weights on a CPU.",
    "strategy": "tf.distribute strategy; multi_worker reads TF_CONFIG; tpu is "
        "untested.",
    "tpu": "TPU address for --strategy=tpu ('' or 'local' on a TPU VM).",
    "jit_compile": "Compile steps with XLA.",
    "steps_per_execution": "Training steps per compiled call: fewer Python round "
        "trips (about 2x images/s at 20 on a 2-core CPU); callbacks, NaN checks and step "
        "backups then see every N-th step.",
    "mixed_precision": "Keras mixed precision policy (the loss stays float32).",
    "backup_save_freq": "Back up every epoch ('epoch') or every N steps.",
    "log_images": "Log samples and reconstructions to TensorBoard every epoch.",
    "verbose": "0: silent, 1: progress bar, 2: one line per epoch.",
    "curve_points_per_decade": "Write curve.csv: train and test ELBO at this many "
        "log-spaced numbers of training examples per decade, from the first compiled "
        "call's to the end (K&W Figure 2; 0: off).",
    "curve_images": "Train and test images (seeded random subsets) of curve.csv.",
    "curve_nll_samples": "Also the test log p(x) in curve.csv, from this many "
        "importance samples (K&W Figure 3; 0: off).",
    # export
    "export": "Export a SavedModel (and TFLite).",
    "export_dir": "Export base directory.",
    "export_name": "Model name under export_dir (default vae_<dataset>).",
    "export_version": "Export version (0: the next free one).",
}

# The (lower, upper) bounds of the numbers that have them.
BOUNDS = {
    "batch_size": (1, None), "dropout": (0.0, 0.99), "latent_dim": (1, None),
    "latent_channels": (1, None), "cell_channels": (1, None),
    "cell_bottleneck": (0, None), "output_cells": (0, None),
    "autoregressive_layers": (0, None), "autoregressive_channels": (1, None),
    "flow_steps": (1, None), "flow_hidden_units": (1, None),
    "likelihood_components": (1, 256), "prior_components": (0, None),
    "num_samples": (1, None), "context_dropout": (0.0, 0.99), "beta": (0.0, None),
    "kl_warmup_steps": (0, None),
    "free_bits": (0.0, None), "epochs": (1, None), "steps_per_epoch": (0, None),
    "lr_decay_rate": (0.0, None), "clipnorm": (0.0, None),
    "global_clipnorm": (0.0, None), "skip_threshold": (0.0, None),
    "ema_momentum": (0.0, 1.0), "early_stopping_patience": (0, None),
    "steps_per_execution": (1, None), "verbose": (0, 2),
    "curve_points_per_decade": (0, 100), "curve_images": (1, None),
    "curve_nll_samples": (0, None), "export_version": (0, None),
}


FLAGS = flags.FLAGS


def define_flags(flag_values=FLAGS):
    """Defines the trainer's flags (HELP, BOUNDS, DEFAULTS, CHOICES) on `flag_values`
    and returns it; where they are defined already, nothing. The command line defines
    them on absl's FLAGS as it starts (`parse_flags`); in-process, `trainer_flags`
    gives them a FlagValues of their own."""
    if all(name in flag_values for name in HELP):
        return flag_values
    for name, help_text in HELP.items():
        _define(flag_values, name, help_text, *BOUNDS.get(name, (None, None)))
    return flag_values


def _define(flag_values, name, help_text, lower_bound, upper_bound):
    """The flag `name`, its kind and default from DEFAULTS, its choices from CHOICES."""
    default, where = DEFAULTS[name], dict(flag_values=flag_values)
    bounds = dict(lower_bound=lower_bound, upper_bound=upper_bound, **where)
    if name in CHOICES:
        flags.DEFINE_enum(name, default, list(CHOICES[name]), help_text, **where)
    elif isinstance(default, bool):
        flags.DEFINE_bool(name, default, help_text, **where)
    elif isinstance(default, int):
        flags.DEFINE_integer(name, default, help_text, **bounds)
    elif isinstance(default, float):
        flags.DEFINE_float(name, default, help_text, **bounds)
    elif isinstance(default, (tuple, list)):
        flags.DEFINE_list(name, [str(v) for v in default], help_text, **where)
    else:
        flags.DEFINE_string(name, default, help_text, **where)


def trainer_flags():
    """A FlagValues of its own holding the trainer's flags (and absl's logging flags,
    --verbosity, shared with FLAGS), for a command line parsed in-process (`run`, a
    tool reading a trainer flagfile): absl's FLAGS may hold a tool's own --batch_size
    or --seed."""
    flag_values = flags.FlagValues()
    for flag in FLAGS.get_flags_for_module(logging):
        flag_values[flag.name] = flag
    return define_flags(flag_values)


def options_from_flags(flag_values=FLAGS):
    """train_and_evaluate's keyword arguments from the parsed trainer flags."""
    options = {name: flag_values[name].value for name in DEFAULTS}
    for name, default in DEFAULTS.items():
        if isinstance(default, (tuple, list)):  # every list option is of integers
            try:
                options[name] = [int(v) for v in options[name]]
            except ValueError:
                raise ConfigError(f"--{name} must be a comma-separated list of "
                                  f"integers, got {','.join(options[name])!r}.") from None
    return options


PROGRAM = "tfvae.train"


def parse_flags(argv):
    """absl's `flags_parser` of the command line: defines the trainer's flags on FLAGS
    and parses `argv`, a bad flag or flagfile in one line (`cli.flags_parser`)."""
    return cli.flags_parser(PROGRAM, define_flags())(argv)


def _train_from_flags(argv, flag_values):
    cli.start_tool(PROGRAM, argv)  # no arguments; TFDS's and TF's INFO lines kept out
    try:
        return train_and_evaluate(**options_from_flags(flag_values))
    except (ConfigError, TrainingDiverged, ExportFailed,
            vae_callbacks.BackupError) as error:
        cli.fail(PROGRAM, error)
    except Interrupted as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr, flush=True)
        sys.exit(130)  # 128 + SIGINT, as shells report a Ctrl-C
    except (tf.errors.ResourceExhaustedError, MemoryError) as error:  # is_out_of_memory
        cli.fail(PROGRAM, f"{cli.out_of_memory_line(error)}; free memory or lower "
                 "--batch_size, and run the command again: it resumes from the run "
                 "directory's last backup when it has one.")
    except (tf.errors.UnavailableError, tf.errors.InternalError) as error:
        if flag_values.strategy != "multi_worker":
            raise
        cli.fail(PROGRAM, f"a worker of the cluster stopped ({type(error).__name__}); "
                 "run the same command again on every worker: they resume from their "
                 "backups.")


def main(argv):
    """The command line after `parse_flags`; returns nothing (app.run would print a
    returned value and exit with 1)."""
    _train_from_flags(argv, FLAGS)


def run(argv):
    """The command line in-process, for tests and notebooks: parses `argv` (argv[0]
    is the program name) from the flag defaults into `trainer_flags()`, trains and
    returns the metrics."""
    flag_values = trainer_flags()
    flag_values.unparse_flags()  # the shared --verbosity too
    return _train_from_flags(cli.flags_parser(PROGRAM, flag_values)(argv), flag_values)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
