"""A trainer's run directory: the names of its files, and reading them back.

`python -m tfvae.train` writes, in `--output_dir`:

    config.json    the options of the run
    best.keras     the model with the best validation bound so far (ELBO, or IWAE)
    best.json      which epoch (1-based) and value best.keras holds
    model.keras    the final model: the best.keras weights, tested and exported
    history.csv    per-epoch train and validation metrics, epoch time and images/s
    metrics.json   test ELBO / rate / distortion and a summary of the run
    warm_start.json  with --init_from: the source file and which weights were copied,
                   new or skipped (`tfvae.warmstart`); also in metrics.json
    curve.csv      with --curve_points_per_decade: train and test ELBO (and test
                   log p(x)) at log-spaced numbers of training examples
    logs/          TensorBoard: elbo, rate, distortion (train and validation),
                   learning rate, and images of prior samples and reconstructions;
                   logs/projector/: posterior codes of 2,000 test images, their
                   sprite and labels, for the Projector tab (`tfvae.projector`)
    backup/        BackupAndRestore state; a killed run started again with the same
                   command continues from it. Deleted when training finishes.
    .lock          while a trainer runs: its host, PID and start time (`claim`), so
                   that a second trainer on the directory is refused; a killed
                   run's lock is taken over.

The tools (`tools.evaluate`, `tools.visualize`) and the plots find their inputs here.
"""

import csv
import json
import math
import os
import platform
import shutil
import socket

CONFIG = "config.json"
BEST = "best.keras"
BEST_RECORD = "best.json"
FINAL = "model.keras"
HISTORY = "history.csv"
METRICS = "metrics.json"
CURVE = "curve.csv"
WARM_START = "warm_start.json"
LOGS = "logs"
METADATA_FILE = "metadata.json"  # beside an export's saved_model.pb
BACKUP = "backup"
FILES = (CONFIG, BEST, BEST_RECORD, FINAL, HISTORY, METRICS, CURVE, WARM_START, LOGS,
         BACKUP)
LOCK = ".lock"


def paths(directory):
    """{file name: its path in `directory`} for every file a run writes."""
    return {name: os.path.join(directory, name) for name in FILES}


def clear(directory):
    """Deletes what a run wrote in `directory` (its `FILES`, and the partial copies a
    kill mid-write can leave beside them), nothing else."""
    from tfvae.user_files import KERAS_PARTIAL, PARTIAL  # noqa: PLC0415 -- as below
    for path in paths(directory).values():
        if os.path.isdir(path):
            shutil.rmtree(path)
        for leftover in (path, path + PARTIAL, path + KERAS_PARTIAL):
            if os.path.isfile(leftover):
                os.remove(leftover)


# -- one trainer per directory ------------------------------------------------------

class InUse(ValueError):
    """Another live trainer holds the directory's lock."""


def _process(pid):
    """'host pid start-time' of a process; the start time (from /proc, else "?")
    tells a live process from a later one that reuses the PID."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        start = "?" if fields[0] == "Z" else fields[19]  # a zombie is dead
    except (OSError, IndexError):
        start = None
    return None if start is None else f"{socket.gethostname()} {pid} {start}"


def _me():
    """This process as a lock names it."""
    return _process(os.getpid()) or f"{socket.gethostname()} {os.getpid()} ?"


def _alive(holder):
    """Whether the process a lock names runs (on another host: assumed so)."""
    host, pid, start = (holder.split() + ["", "", ""])[:3]
    if host != socket.gethostname():
        return True
    if not pid.isdigit():
        return False
    if os.path.isdir("/proc"):
        return _process(int(pid)) == holder
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def claim(directory):
    """Takes `directory`'s lock for this process; InUse (one line) when a live
    trainer holds it. The lock of a killed trainer (its PID gone or reused) or of
    this process is taken over. Returns the lock's path, for `release`."""
    path = os.path.join(directory, LOCK)
    me = _me()
    for _ in range(3):
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(path) as f:
                holder = f.read().strip()
            if holder and holder != me and _alive(holder):
                raise InUse(f"{directory} is in use by another trainer (PID "
                            f"{holder.split()[1]} on {holder.split()[0]}); wait for it to "
                            "end or use another --output_dir (if it is not running, "
                            f"delete {path}).") from None
            try:
                os.remove(path)
            except FileNotFoundError:
                pass
            continue
        with os.fdopen(handle, "w") as f:
            f.write(me)
        return path
    raise InUse(f"{directory}: another trainer keeps taking its lock {path}.")


def release(path):
    """Deletes the lock at `path` if this process holds it."""
    me = _me()
    try:
        with open(path) as f:
            if f.read().strip() == me:
                os.remove(path)
    except (OSError, TypeError):
        pass


def read_json(path, default=None):
    """The JSON value in `path`, or `default` when there is no such file."""
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def read_config(directory):
    """The run's options (config.json), or {} when it has none."""
    return read_json(os.path.join(directory, CONFIG), {})


def history_rows(path):
    """The rows of a per-epoch CSV (Keras CSVLogger) as dicts of strings; [] if none."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def drop_history_from(path, epoch):
    """Rewrite history.csv without the rows of epochs >= `epoch` (0-based): those a run
    resumed from its backup trains again, so that each epoch is logged once."""
    rows = history_rows(path)
    kept = [row for row in rows if int(row["epoch"]) < epoch]
    if len(kept) == len(rows):
        return
    from tfvae import user_files  # noqa: PLC0415 -- numpy only when a run resumes

    with user_files.written_whole(path) as partial, open(partial, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def read_history(path):
    """Columns of a per-epoch CSV as {name: float array} (NaN where a cell is empty)."""
    import numpy as np  # noqa: PLC0415 -- the trainer reads rows without numpy

    rows = history_rows(path)
    if not rows:
        raise ValueError(f"{path} has no epochs.")
    return {key: np.array([_number(row.get(key)) for row in rows]) for key in rows[0]}


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def best_logged(path, monitor):
    """(1-based epoch, value) of the largest finite `monitor` in history.csv, or None."""
    logged = [(int(row["epoch"]) + 1, _number(row.get(monitor)))
              for row in history_rows(path)]
    logged = [(epoch, value) for epoch, value in logged if math.isfinite(value)]
    return max(logged, key=lambda ev: ev[1]) if logged else None


def best_saved(directory, monitor):
    """(1-based epoch, value) that best.keras holds: from best.json, or for a run
    written before it existed, the best `monitor` in history.csv; None if neither."""
    files = paths(directory)
    try:
        with open(files[BEST_RECORD]) as f:
            record = json.load(f)
        if record["monitor"] == monitor and os.path.exists(files[BEST]):
            return int(record["epoch"]), float(record["value"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return best_logged(files[HISTORY], monitor)


def history_path(run):
    """history.csv of a run directory; a file path is returned as it is."""
    return os.path.join(run, HISTORY) if os.path.isdir(run) else run


def examples_per_epoch(run, history=None):
    """Training examples per epoch of a run directory, or None if unknown.

    From metrics.json (steps_per_epoch) and config.json (batch_size), else from the
    `images_per_s * epoch_time_s` columns that the trainer logs (an array).
    """
    directory = run if os.path.isdir(run) else os.path.dirname(run)
    try:
        steps = read_json(os.path.join(directory, METRICS), {}).get("steps_per_epoch")
        if steps:
            return float(steps) * float(read_config(directory)["batch_size"])
    except (KeyError, ValueError):
        pass
    if history and "images_per_s" in history and "epoch_time_s" in history:
        per_epoch = history["images_per_s"] * history["epoch_time_s"]
        if all(math.isfinite(v) for v in per_epoch):
            return per_epoch
    return None


def locate_model(path, prefer="saved_model"):
    """Where a trained model lies: a preset name (`tfvae.presets`), a `.keras` file, a
    run directory (its model.keras, else best.keras) or an export's version folder
    (its SavedModel, or the `.keras` file beside it).

    Args:
        path: one of the above.
        prefer: "saved_model" or "keras", the kind returned when a version folder
            holds both.

    Returns:
        {"kind": "keras" | "saved_model", "path": file or directory,
         "config": the trainer's config.json beside a .keras file, or {},
         "metadata": an export's metadata.json, or {}}.
    """
    from tfvae import presets  # noqa: PLC0415 -- presets.load locates through here

    path = presets.resolve(path)
    found = _models_in(path)
    if not found:
        what = (f"is not a .keras file, a trainer output directory ({FINAL}) or a "
                "SavedModel directory")
        raise FileNotFoundError(f"{path} {what}." if os.path.exists(path) else
                                f"{path} does not exist: it {what}.")
    kind = prefer if prefer in found else next(iter(found))
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    return {"kind": kind, "path": found[kind],
            "config": read_config(folder) if kind == "keras" else {},
            "metadata": read_json(os.path.join(folder, METADATA_FILE), {})}


def locate_keras(path):
    """`locate_model(path)` of the `.keras` file; InputError (one line) when `path` is
    a SavedModel without one."""
    location = locate_model(path, prefer="keras")
    if location["kind"] != "keras":
        from tfvae import checks  # noqa: PLC0415

        raise checks.InputError(
            f"{location['path']} is a SavedModel without a .keras file; give a .keras "
            "file, a run directory, a preset name or a version folder holding a .keras "
            "file (tools.sample and tools.evaluate read SavedModels).")
    return location


def keras_path(path):
    """The `.keras` file of a model given as in `locate_model`; a path that is no
    folder is returned as it is (`keras_files.load_keras_model` names a missing file)."""
    from tfvae import presets  # noqa: PLC0415

    path = presets.resolve(path)
    return locate_keras(path)["path"] if os.path.isdir(path) else path


def _models_in(path):
    """{kind: path} of the models at `path` (see `locate_model`), in the order a
    caller without a preference takes them."""
    from tfvae import presets  # noqa: PLC0415

    if not os.path.isdir(path):
        is_keras = path.endswith(".keras") and os.path.isfile(path)
        return {"keras": path} if is_keras else {}
    found = {}
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        found["saved_model"] = path
    candidates = (os.path.join(path, FINAL), os.path.join(path, BEST),
                  presets.keras_file(path))
    keras_file = next((f for f in candidates if f and os.path.isfile(f)), None)
    if keras_file:
        found["keras"] = keras_file
    return found


def machine_info():
    """The machine a timing ran on: CPU model, cores, TensorFlow version, GPUs."""
    import tensorflow as tf  # noqa: PLC0415 -- the rest of the module needs no TF

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f
                     if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else os.cpu_count()
    gpus = [tf.config.experimental.get_device_details(device).get("device_name",
                                                                   device.name)
            for device in tf.config.list_physical_devices("GPU")]
    return {"cpu": cpu, "cpu_cores": cores, "tensorflow": tf.__version__,
            "gpus": gpus, "platform": platform.platform()}
