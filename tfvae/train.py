"""Train, evaluate and export a VAE: `python -m tfvae.train --flagfile=configs/mnist.cfg`.

Flags given after `--flagfile` override it. The same run from Python (a notebook):

    from tfvae.train import train_and_evaluate
    metrics = train_and_evaluate("/tmp/run", dataset="binarized_mnist", epochs=10,
                                 tfds_manual_dir="/path/to/binarized_mnist")

`train_and_evaluate` takes every flag as a keyword argument of the same name and
default; only `main` reads FLAGS. What a run writes to `output_dir`:

    config.json    the options of the run
    best.keras     the model with the best validation bound so far (ELBO, or IWAE)
    model.keras    the final model: the best.keras weights, tested and exported
    history.csv    per-epoch train and validation metrics, epoch time and images/s
    metrics.json   test ELBO / rate / distortion and a summary of the run
    logs/          TensorBoard: elbo, rate, distortion (train and validation),
                   learning rate, and images of prior samples and reconstructions
    backup/        BackupAndRestore state; a killed run started again with the same
                   command continues from it. Deleted when training finishes.

The model is exported with `tfvae.export.export_model` to export_dir/export_name/N.

A NaN or Inf loss stops training at once: the diverged epoch is never saved as the
best model nor backed up, the run exits with status 1 and a message saying where
the last good checkpoint is. Bad flags, data or directories end the run with one
line on stderr and status 1 before any training.

Multi-worker: set TF_CONFIG on each worker and pass --strategy=multi_worker; the
batch size is global, each worker reads its share of every batch (DATA sharding),
the chief (task 0) writes output_dir and the others output_dir/workers/<task>.
"""

import csv
import importlib.util
import inspect
import json
import math
import os
import statistics
import sys
import time
import zipfile

import keras
import tensorflow as tf
from absl import app, flags, logging

from tfvae import builders, callbacks as vae_callbacks, checks, data, heads

MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")
# build_model's options; a backup can only resume the model they describe.
_MODEL_OPTIONS = tuple(
    name for name, p in inspect.signature(builders.build_model).parameters.items()
    if p.kind == p.KEYWORD_ONLY)


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


def _warm_start(model, path):
    """Starts from the weights of a saved model with the same networks and prior.

    The objective may differ: e.g. fine-tune an ELBO-trained model on the IWAE bound.
    A backup of this run, when there is one, still takes precedence (it is newer).
    """
    if not os.path.isfile(path):
        raise ValueError(f"--init_from {path} is not a file; give a saved model, e.g. "
                         "a run's best.keras.")
    if not path.endswith((".keras", ".weights.h5")):
        raise ValueError(f"--init_from {path} is neither a .keras model nor a "
                         ".weights.h5 file.")
    try:
        model.load_weights(path)
    except zipfile.BadZipFile:
        raise ValueError(f"--init_from {path} cannot be read as a .keras file (cut "
                         "short or not a model).") from None
    except ValueError as error:
        raise ValueError(f"--init_from {path} has other networks or another prior than "
                         f"this run: {str(error).splitlines()[0]}") from None


def _check_resumable(path, config):
    """A backup may only be resumed by the same model and dataset."""
    with open(path) as f:
        previous = json.load(f)
    changed = [f"{key}: {previous.get(key)!r} -> {config[key]!r}"
               for key in ("dataset", *_MODEL_OPTIONS)
               if json.loads(json.dumps(previous.get(key))) != json.loads(
                   json.dumps(config[key]))]
    if changed:
        raise ValueError(
            f"{os.path.dirname(path)} holds a backup of a different run ("
            f"{'; '.join(changed)}); use another --output_dir or delete its backup/.")


def _logged(history_path, monitor):
    """(epoch, value) of every finite `monitor` value in history.csv."""
    if not os.path.exists(history_path):
        return []
    with open(history_path) as f:
        rows = [(int(row["epoch"]), float(row[monitor])) for row in csv.DictReader(f)
                if row.get(monitor) not in (None, "")]
    return [(epoch, value) for epoch, value in rows if math.isfinite(value)]


def _best_logged(history_path, monitor):
    """Best (max) value of `monitor` in an existing history.csv, or None."""
    return max((v for _, v in _logged(history_path, monitor)), default=None)


def _best_epoch(history_path, monitor):
    """1-based epoch of the best `monitor` value in history.csv, or None."""
    logged = _logged(history_path, monitor)
    return max(logged, key=lambda ev: ev[1])[0] + 1 if logged else None


def _steps_per_epoch(train_ds, num_examples, batch_size, cap):
    if cap:
        return int(cap)
    if num_examples:
        return math.ceil(num_examples / batch_size)
    cardinality = int(train_ds.cardinality())
    return cardinality if cardinality > 0 else None


def _export(model, export_dir, export_name, export_version):
    if importlib.util.find_spec("tfvae.export") is None:
        logging.warning("tfvae.export is not available; the model was not exported.")
        return None
    from tfvae import export as export_lib  # noqa: PLC0415 -- optional until it lands

    return export_lib.export_model(model, export_dir, export_name,
                                   version=export_version or None)


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
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return (f"the export failed ({type(error).__name__}: {first}); nothing was left in "
            f"the export dir. The test figures are in {paths['metrics.json']} and the "
            f"model in {paths['model.keras']}: export it with python -m tools.export "
            f"--checkpoint={paths['model.keras']}.")


def _write_json(path, value):
    with open(path, "w") as f:
        json.dump(value, f, indent=2, default=str)


def train_and_evaluate(
        output_dir="runs/vae", *,
        # data
        dataset="binarized_mnist", train_split="train", validation_split="validation",
        test_split="test", tfds_data_dir=None, tfds_manual_dir=None,
        binarization="static", batch_size=100,
        # model (see builders.build_model)
        encoder="mlp", decoder="mlp", encoder_hidden_units=(500, 500),
        decoder_hidden_units=(500, 500), encoder_filters=(32, 64),
        decoder_filters=(64, 32), activation="relu", dropout=0.0, latent_dim=50,
        top_down_latent_dims=(), top_down_hidden_units=(300, 300), posterior="gaussian",
        flow_steps=2, flow_hidden_units=256, likelihood="bernoulli", prior="standard_normal", prior_components=0,
        num_samples=1, kl="auto", objective="elbo",
        gradient_estimator="reparameterization", beta=1.0, kl_warmup_steps=0,
        free_bits=0.0, info_alpha=0.0, info_lambda=1.0, mmd_kernel="imq",
        # optimization
        epochs=10, steps_per_epoch=0, optimizer="adam", learning_rate=1e-3,
        lr_schedule="constant", lr_decay_rate=0.5, lr_decay_epochs=1.0, clipnorm=0.0,
        use_ema=False, ema_momentum=0.99, early_stopping_patience=0, init_from="",
        # runtime
        seed=0, deterministic=False, strategy="default", tpu="", jit_compile=True,
        steps_per_execution=1,
        mixed_precision="none", backup_save_freq="epoch", log_images=True, verbose=1,
        # export
        export=True, export_dir="saved_models", export_name="", export_version=0,
        callbacks=()):
    """Trains a VAE with `fit`, evaluates it on the test split, saves and exports it.

    Every argument but `callbacks` (extra Keras callbacks) is the flag of the same
    name; see `python -m tfvae.train --helpfull`. Returns the dict written to
    metrics.json. Raises `ConfigError` for bad options, data or directories (before
    training), `vae_callbacks.BackupError` for an unreadable backup,
    `TrainingDiverged` when the loss becomes NaN or Inf, `Interrupted` (a
    KeyboardInterrupt) on Ctrl-C during training, saying where the backup is, and
    `ExportFailed` when the export fails (metrics.json is written first).
    """
    config = {k: v for k, v in locals().items() if k != "callbacks"}
    config = json.loads(json.dumps(config, default=list))
    model_options = {k: config[k] for k in _MODEL_OPTIONS}
    previous_policy = keras.mixed_precision.global_policy()
    # What a Ctrl-C outside `fit` leaves; `fit` itself says where its backup is.
    on_interrupt = ("interrupted before training started; nothing was trained: the same "
                    "command starts the run.")
    try:
        # -- setup: every mistake here is a one-line ConfigError ------------------
        try:
            if mixed_precision not in MIXED_PRECISION:
                raise ValueError(f"Unknown mixed_precision {mixed_precision!r}; expected "
                                 f"one of {', '.join(MIXED_PRECISION)}.")
            save_freq = _save_freq(backup_save_freq)
            # A multi-worker strategy must exist before any other TensorFlow work.
            strategy_obj = builders.build_strategy(strategy, tpu)
            keras.utils.set_random_seed(seed)
            if deterministic:
                tf.config.experimental.enable_op_determinism()
            keras.mixed_precision.set_global_policy(
                "float32" if mixed_precision == "none" else mixed_precision)
            chief = builders.is_chief(strategy_obj)
            work_dir = output_dir if chief else os.path.join(
                output_dir, "workers", str(strategy_obj.cluster_resolver.task_id))
            _check_writable(work_dir, "Output dir")
            paths = {name: os.path.join(work_dir, name) for name in (
                "config.json", "best.keras", "model.keras", "history.csv",
                "metrics.json", "logs", "backup")}
            export_name = export_name or f"vae_{data.short_name(dataset)}"
            if export and chief:  # Fail now, not after hours of training.
                _check_writable(export_dir, "Export dir")
                version_dir = os.path.join(export_dir, export_name, str(export_version))
                if export_version and os.path.exists(version_dir) and os.listdir(
                        version_dir):
                    raise ValueError(f"Export {version_dir} exists; pick another "
                                     "--export_version or 0 for the next free one.")
            resuming = os.path.exists(os.path.join(paths["backup"], "latest.weights.h5"))
            if resuming and os.path.exists(paths["config.json"]):
                _check_resumable(paths["config.json"], config)

            info = data.dataset_info(dataset, tfds_data_dir, tfds_manual_dir)
            load = dict(binarize=binarization, data_dir=tfds_data_dir,
                        manual_dir=tfds_manual_dir, seed=seed,
                        drop_remainder=strategy == "tpu")
            splits = {"train": train_split, "validation": validation_split,
                      "test": test_split}
            peeks = {}
            for role, split in splits.items():
                if split:  # Unknown or empty splits, bad images: fail before training.
                    peek = data.load_dataset(dataset, split, batch_size, shuffle=False,
                                             cache=False, **load).take(1)
                    peeks[role] = data.check_images(peek, info.image_shape,
                                                    f"{dataset}[{split}]")
            if not train_split or not test_split:
                raise ValueError("train_split and test_split must be set.")
            train_ds = data.load_dataset(dataset, train_split, batch_size,
                                         repeat=bool(steps_per_epoch), **load)
            val_ds = (data.load_dataset(dataset, validation_split, batch_size,
                                        shuffle=False, **load)
                      if validation_split else None)
            steps = _steps_per_epoch(
                data.load_dataset(dataset, train_split, batch_size, shuffle=False,
                                  cache=False, **load),
                info.num_examples.get(train_split), batch_size, steps_per_epoch)

            with strategy_obj.scope():
                model = builders.build_model(info.image_shape, **model_options)
                lr = builders.build_learning_rate(
                    learning_rate, lr_schedule,
                    total_steps=steps * epochs if steps else None,
                    steps_per_epoch=steps, decay_rate=lr_decay_rate,
                    decay_epochs=lr_decay_epochs)
                model.compile(optimizer=builders.build_optimizer(
                    optimizer, lr, clipnorm=clipnorm, use_ema=use_ema,
                    ema_momentum=ema_momentum), jit_compile=jit_compile,
                    steps_per_execution=steps_per_execution)
            if init_from:
                _warm_start(model, init_from)
            # A forward pass on two images finds bad option combinations now.
            model.compute_loss(y_pred=model(peeks["train"][:2]))
            model.reset_metrics()
        except (ValueError, OSError, data.DataUnavailableError) as error:
            raise ConfigError(str(error)) from error

        with open(paths["config.json"], "w") as f:
            json.dump(config, f, indent=2)
        print(f"Training a VAE ({model.count_params():,} weights) on {dataset}"
              f"[{train_split}], {steps or '?'} steps per epoch of {batch_size} images, "
              f"{strategy_obj.num_replicas_in_sync} replica(s); writing to {work_dir}.",
              flush=True)

        # -- callbacks ---------------------------------------------------------------
        # The bound being maximized: the k-sample IWAE bound when that is the objective.
        bound = "iwae" if objective == "iwae" else "elbo"
        monitor = f"val_{bound}" if val_ds is not None else bound
        guard = vae_callbacks.NonFiniteGuard()
        timer = vae_callbacks.EpochTimer(batch_size)
        backup = vae_callbacks.Backup(paths["backup"], save_freq=save_freq,
                                      double_checkpoint=True)
        cbs = [guard, timer, backup]
        if use_ema:  # After the backup, which must store the raw weights.
            cbs.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
        cbs.append(vae_callbacks.BestCheckpoint(
            paths["best.keras"], monitor, mode="max",
            initial_value_threshold=_best_logged(paths["history.csv"], monitor)
            if resuming else None, verbose=int(verbose > 0)))
        if early_stopping_patience:
            cbs.append(keras.callbacks.EarlyStopping(
                monitor=monitor, mode="max", patience=early_stopping_patience,
                restore_best_weights=True, verbose=int(verbose > 0)))
        if importlib.util.find_spec("tensorboard") is None:  # TF 2.21 dropped the dep
            logging.warning("TensorBoard is not installed; no TensorBoard logs "
                            "(pip install tensorboard).")
        else:
            cbs.append(keras.callbacks.TensorBoard(paths["logs"], write_graph=False,
                                                   profile_batch=0))
            if log_images:
                reference = peeks.get("validation", peeks["train"])[:8]
                cbs.append(vae_callbacks.ImageGrid(
                    os.path.join(paths["logs"], "images"), reference))
        cbs.append(keras.callbacks.CSVLogger(paths["history.csv"], append=resuming))
        cbs.extend(callbacks)

        # -- train -----------------------------------------------------------------
        start = time.perf_counter()
        try:
            model.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch or None,
                      validation_data=val_ds, callbacks=cbs, verbose=verbose,
                      shuffle=False)
        except KeyboardInterrupt:
            raise Interrupted(_interrupt_message(paths["backup"], guard.epoch)) from None
        on_interrupt = (f"interrupted after training, while testing or exporting; the "
                        f"trained model is in {paths['best.keras']} (no export was left "
                        "half-written): test or export it with tools.evaluate or "
                        "tools.export.")
        train_time = time.perf_counter() - start
        optimizer_steps = int(model.optimizer.iterations.numpy())
        if guard.diverged:
            raise TrainingDiverged(_divergence_message(
                guard.diverged, paths["best.keras"], paths["backup"]))

        # -- evaluate, save, export ------------------------------------------------
        if os.path.exists(paths["best.keras"]):
            model.load_weights(paths["best.keras"])
        test_ds = data.load_dataset(dataset, test_split, batch_size, shuffle=False, **load)
        test = model.evaluate(test_ds, return_dict=True, verbose=0)
        test = {k: float(v) for k, v in test.items()}
        print(f"Test ELBO on {dataset}[{test_split}]: {test['elbo']:.3f} nats per image "
              f"(rate {test['rate']:.3f}, distortion {test['distortion']:.3f}).",
              flush=True)
        metrics = {
            "dataset": dataset,
            "test_split": test_split,
            "test": test,
            f"best_{monitor}": _best_logged(paths["history.csv"], monitor),
            "best_epoch": _best_epoch(paths["history.csv"], monitor),
            "epochs": epochs,
            "steps_per_epoch": steps,
            "optimizer_steps": optimizer_steps,
            "resumed_from": backup.resumed_from,
            "train_time_s": train_time,
            "epoch_time_s": timer.times,
            "images_per_s": timer.rates,
            "median_images_per_s": statistics.median(timer.rates) if timer.rates
            else None,
            "paths": {k: paths[k] for k in ("best.keras", "model.keras", "history.csv",
                                            "logs")},
        }
        if chief:
            model.save(paths["model.keras"])
        _write_json(paths["metrics.json"], metrics)  # Before the export can fail.
        if chief and export:
            try:
                metrics["export"] = _export(model, export_dir, export_name,
                                            export_version)
            except Exception as error:  # noqa: BLE001 -- one line, figures kept
                metrics["export_error"] = f"{type(error).__name__}: {error}"
                _write_json(paths["metrics.json"], metrics)
                raise ExportFailed(_export_failure(error, paths)) from error
            _write_json(paths["metrics.json"], metrics)
        return metrics
    except KeyboardInterrupt as interrupt:
        if isinstance(interrupt, Interrupted):
            raise
        raise Interrupted(on_interrupt) from None
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)


# -- command line ------------------------------------------------------------------

_DEFAULT = {name: p.default for name, p in
            inspect.signature(train_and_evaluate).parameters.items()}

flags.DEFINE_string("output_dir", _DEFAULT["output_dir"],
                    "Checkpoints, backups, TensorBoard logs, history and metrics.")
# data
flags.DEFINE_string("dataset", _DEFAULT["dataset"],
                    f"TFDS name: {', '.join(data.SUPPORTED)} or any TFDS image dataset; "
                    "or folder:DIR (PNG/JPEG) or npy:FILE.npy (see tfvae.data).")
flags.DEFINE_string("train_split", _DEFAULT["train_split"], "TFDS split for training.")
flags.DEFINE_string("validation_split", _DEFAULT["validation_split"],
                    "Split for validation and best checkpoints ('' for none; mnist has "
                    "no 'validation': use e.g. 'train[50000:]' with "
                    "--train_split='train[:50000]').")
flags.DEFINE_string("test_split", _DEFAULT["test_split"], "Split for the final test.")
flags.DEFINE_string("tfds_data_dir", _DEFAULT["tfds_data_dir"],
                    "Where TFDS keeps prepared datasets (TFDS default if unset).")
flags.DEFINE_string("tfds_manual_dir", _DEFAULT["tfds_manual_dir"],
                    "Directory with the dataset's source files, for offline preparation "
                    "(binarized_mnist: binarized_mnist_{train,valid,test}.amat).")
flags.DEFINE_enum("binarization", _DEFAULT["binarization"], ["static", "dynamic", "none"],
                  "static: one fixed Bernoulli draw per image; dynamic: a new draw "
                  "every epoch; none: grey levels in [0, 1]. binarized_mnist is "
                  "already binary.")
flags.DEFINE_integer("batch_size", _DEFAULT["batch_size"],
                     "Global batch size (summed over replicas and workers).",
                     lower_bound=1)
# model
flags.DEFINE_enum("encoder", _DEFAULT["encoder"], list(builders.NETWORKS),
                  "Encoder network.")
flags.DEFINE_enum("decoder", _DEFAULT["decoder"], list(builders.NETWORKS),
                  "Decoder network.")
flags.DEFINE_list("encoder_hidden_units", list(_DEFAULT["encoder_hidden_units"]),
                  "Dense layer sizes of the encoder.")
flags.DEFINE_list("decoder_hidden_units", list(_DEFAULT["decoder_hidden_units"]),
                  "Dense layer sizes of the decoder.")
flags.DEFINE_list("encoder_filters", list(_DEFAULT["encoder_filters"]),
                  "Channels of the conv encoder's stride-2 convolutions.")
flags.DEFINE_list("decoder_filters", list(_DEFAULT["decoder_filters"]),
                  "Channels of the conv decoder's transposed convolutions.")
flags.DEFINE_string("activation", _DEFAULT["activation"], "Hidden activation.")
flags.DEFINE_float("dropout", _DEFAULT["dropout"],
                   "Dropout after each hidden layer (MLP networks only).",
                   lower_bound=0.0, upper_bound=0.99)
flags.DEFINE_integer("latent_dim", _DEFAULT["latent_dim"],
                     "Size of z (of the top layer z_L in a hierarchy).", lower_bound=1)
flags.DEFINE_list("top_down_latent_dims", list(_DEFAULT["top_down_latent_dims"]),
                  "Sizes of the stochastic layers below the top, top first ('' for one "
                  "layer; '40' for a two-level hierarchy).")
flags.DEFINE_list("top_down_hidden_units", list(_DEFAULT["top_down_hidden_units"]),
                  "Dense layer sizes of each top-down block (state and posterior merge).")
flags.DEFINE_enum("posterior", _DEFAULT["posterior"], list(heads.POSTERIORS),
                  "Posterior head of every layer: diagonal Gaussian or IAF.")
flags.DEFINE_integer("flow_steps", _DEFAULT["flow_steps"],
                     "Autoregressive (MADE) steps of an IAF posterior.", lower_bound=1)
flags.DEFINE_integer("flow_hidden_units", _DEFAULT["flow_hidden_units"],
                     "Hidden units of each IAF step.", lower_bound=1)
flags.DEFINE_enum("likelihood", _DEFAULT["likelihood"], ["bernoulli", "gaussian"],
                  "Pixel likelihood p(x|z).")
flags.DEFINE_enum("prior", _DEFAULT["prior"], list(builders.PRIORS), "Prior p(z).")
flags.DEFINE_integer("prior_components", _DEFAULT["prior_components"],
                     "Mixture components (default 10) or VampPrior pseudo-inputs "
                     "(default 500); 0 for the default.", lower_bound=0)
flags.DEFINE_integer("num_samples", _DEFAULT["num_samples"],
                     "Samples of z per image (L for the ELBO, k for IWAE).",
                     lower_bound=1)
flags.DEFINE_enum("kl", _DEFAULT["kl"], ["auto", "analytic", "sampled"],
                  "Rate estimator: closed form where TFP has one (auto), or sampled.")
flags.DEFINE_enum("objective", _DEFAULT["objective"], ["elbo", "iwae"], "Objective.")
flags.DEFINE_enum("gradient_estimator", _DEFAULT["gradient_estimator"],
                  ["reparameterization", "score_function", "dreg"],
                  "Encoder gradient estimator.")
flags.DEFINE_float("beta", _DEFAULT["beta"], "Weight of the rate (beta-VAE).",
                   lower_bound=0.0)
flags.DEFINE_integer("kl_warmup_steps", _DEFAULT["kl_warmup_steps"],
                     "Optimizer steps of the linear warm-up of the rate weight to beta.",
                     lower_bound=0)
flags.DEFINE_float("free_bits", _DEFAULT["free_bits"],
                   "Minimum rate per latent dimension in nats (0: off).", lower_bound=0.0)
flags.DEFINE_float("info_alpha", _DEFAULT["info_alpha"], "InfoVAE alpha.")
flags.DEFINE_float("info_lambda", _DEFAULT["info_lambda"], "InfoVAE lambda.")
flags.DEFINE_enum("mmd_kernel", _DEFAULT["mmd_kernel"], ["imq", "rbf"],
                  "InfoVAE MMD kernel.")
# optimization
flags.DEFINE_integer("epochs", _DEFAULT["epochs"], "Training epochs.", lower_bound=1)
flags.DEFINE_integer("steps_per_epoch", _DEFAULT["steps_per_epoch"],
                     "Cap on steps per epoch (0: one pass over the training split).",
                     lower_bound=0)
flags.DEFINE_enum("optimizer", _DEFAULT["optimizer"], list(builders.OPTIMIZERS),
                  "Optimizer.")
flags.DEFINE_float("learning_rate", _DEFAULT["learning_rate"], "Initial learning rate.")
flags.DEFINE_enum("lr_schedule", _DEFAULT["lr_schedule"], list(builders.LR_SCHEDULES),
                  "constant; cosine: decay to 0 over all epochs; exponential: times "
                  "lr_decay_rate every lr_decay_epochs (smoothly, per step).")
flags.DEFINE_float("lr_decay_rate", _DEFAULT["lr_decay_rate"],
                   "Factor of the exponential schedule.", lower_bound=0.0)
flags.DEFINE_float("lr_decay_epochs", _DEFAULT["lr_decay_epochs"],
                   "Period in epochs of the exponential schedule.")
flags.DEFINE_float("clipnorm", _DEFAULT["clipnorm"],
                   "Clip each gradient tensor to this norm (0: off).", lower_bound=0.0)
flags.DEFINE_bool("use_ema", _DEFAULT["use_ema"],
                  "Keep an exponential moving average of the weights; validation, "
                  "checkpoints and the final model use it.")
flags.DEFINE_float("ema_momentum", _DEFAULT["ema_momentum"], "EMA momentum.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer("early_stopping_patience", _DEFAULT["early_stopping_patience"],
                     "Stop after this many epochs without a better validation bound (ELBO, or "
                     "the IWAE bound with --objective=iwae) "
                     "(0: off).", lower_bound=0)
flags.DEFINE_string("init_from", _DEFAULT["init_from"],
                    "Start from the weights of this saved model (.keras, e.g. another "
                    "run's best.keras) with the same networks and prior; the objective "
                    "may differ (fine-tune an ELBO model on the IWAE bound).")
# runtime
flags.DEFINE_integer("seed", _DEFAULT["seed"],
                     "Seeds weights, shuffling and binarization.")
flags.DEFINE_bool("deterministic", _DEFAULT["deterministic"],
                  "Deterministic ops (tf.config.experimental.enable_op_determinism, "
                  "for the whole process; Keras then turns XLA off): two runs with "
                  "one seed give identical weights on a CPU.")
flags.DEFINE_enum("strategy", _DEFAULT["strategy"], list(builders.STRATEGIES),
                  "tf.distribute strategy; multi_worker reads TF_CONFIG; tpu is "
                  "untested.")
flags.DEFINE_string("tpu", _DEFAULT["tpu"],
                    "TPU address for --strategy=tpu ('' or 'local' on a TPU VM).")
flags.DEFINE_bool("jit_compile", _DEFAULT["jit_compile"], "Compile steps with XLA.")
flags.DEFINE_integer("steps_per_execution", _DEFAULT["steps_per_execution"],
                     "Training steps per compiled call: fewer Python round trips "
                     "(about 2x images/s at 20 on a 2-core CPU); callbacks, NaN checks and "
                     "step backups then see every N-th step.", lower_bound=1)
flags.DEFINE_enum("mixed_precision", _DEFAULT["mixed_precision"], list(MIXED_PRECISION),
                  "Keras mixed precision policy (the loss stays float32).")
flags.DEFINE_string("backup_save_freq", _DEFAULT["backup_save_freq"],
                    "Back up every epoch ('epoch') or every N steps.")
flags.DEFINE_bool("log_images", _DEFAULT["log_images"],
                  "Log samples and reconstructions to TensorBoard every epoch.")
flags.DEFINE_integer("verbose", _DEFAULT["verbose"],
                     "0: silent, 1: progress bar, 2: one line per epoch.",
                     lower_bound=0, upper_bound=2)
# export
flags.DEFINE_bool("export", _DEFAULT["export"], "Export a SavedModel (and TFLite).")
flags.DEFINE_string("export_dir", _DEFAULT["export_dir"], "Export base directory.")
flags.DEFINE_string("export_name", _DEFAULT["export_name"],
                    "Model name under export_dir (default vae_<dataset>).")
flags.DEFINE_integer("export_version", _DEFAULT["export_version"],
                     "Export version (0: the next free one).", lower_bound=0)

FLAGS = flags.FLAGS
_LIST_OF_INTS = ("encoder_hidden_units", "decoder_hidden_units", "encoder_filters",
                 "decoder_filters", "top_down_latent_dims", "top_down_hidden_units")


def options_from_flags():
    """train_and_evaluate's keyword arguments from the parsed flags."""
    options = {name: FLAGS[name].value for name in _DEFAULT if name != "callbacks"}
    for name in _LIST_OF_INTS:
        try:
            options[name] = [int(v) for v in options[name]]
        except ValueError:
            raise ConfigError(f"--{name} must be a comma-separated list of integers, "
                              f"got {','.join(options[name])!r}.") from None
    return options


PROGRAM = "tfvae.train"
# absl flags parser that reports a bad flag or flagfile in one line.
parse_flags = checks.flags_parser(PROGRAM)


def _fail(message):
    checks.fail(PROGRAM, message)


def _train_from_flags(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    if not FLAGS["verbosity"].present:  # Keep TFDS's and TF's INFO lines out.
        logging.set_verbosity(logging.WARNING)
    try:
        return train_and_evaluate(**options_from_flags())
    except (ConfigError, TrainingDiverged, ExportFailed,
            vae_callbacks.BackupError) as error:
        _fail(error)
    except Interrupted as error:
        print(f"{PROGRAM}: {error}", file=sys.stderr, flush=True)
        sys.exit(130)  # 128 + SIGINT, as shells report a Ctrl-C
    except (tf.errors.UnavailableError, tf.errors.InternalError) as error:
        if FLAGS.strategy != "multi_worker":
            raise
        _fail(f"a worker of the cluster stopped ({type(error).__name__}); run the same "
              "command again on every worker: they resume from their backups.")


def main(argv):
    _train_from_flags(argv)  # app.run would print a returned value and exit with 1


def run(argv):
    """The command line in-process, for tests and notebooks: parses `argv` (argv[0]
    is the program name) from the flag defaults, trains and returns the metrics."""
    FLAGS.unparse_flags()
    return _train_from_flags(parse_flags(argv))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
