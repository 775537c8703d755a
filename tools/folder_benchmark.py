r"""Training throughput on a folder of PNG files against the same images from TFDS.

    python -m tools.folder_benchmark --tfds_manual_dir=/usr/share/datasets/fashion-mnist

Writes the first --num_images training images of --dataset as PNG files in class
subfolders (a `folder:` dataset, `tfvae.user_data`), then trains the same model on
them twice through the command line (`python -m tfvae.train`, one process each, the
config's options): once as `--dataset=folder:DIR`, once as `--dataset=<TFDS name>
--train_split=train[:N]`. It prints each run's median training images/s (over the
epochs after the first, which compiles) and their ratio; the target is a folder at
no less than 70% of TFDS's rate, which holds because a folder is decoded once per
process and cached as uint8 like a TFDS split. Timings are of this machine (printed).

Bad input ends with one line `tools.folder_benchmark: error: ...` and status 1.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile

from absl import app, flags

from tfvae import cli, user_files
from tools import common

PROGRAM = "tools.folder_benchmark"
TARGET_RATIO = 0.70
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)
common.define_data_flags("Labelled TFDS dataset to copy.", "fashion_mnist", split=None)
flags.adopt_module_key_flags(common)
flags.DEFINE_integer("num_images", 5000, "PNG files to write and train on.",
                     lower_bound=100)
flags.DEFINE_integer("epochs", 4, "Training epochs of each run (the first compiles).",
                     lower_bound=2)
flags.DEFINE_string("config", "configs/fashion_mnist_cvae.cfg", "Trainer flagfile of "
                    "the model; data, epochs and output flags are set here.")
flags.DEFINE_string("work_dir", None, "Where the PNGs and runs go (default: a "
                    "temporary folder, removed at the end).")
flags.DEFINE_string("output", None, "Write the figures here as JSON.")


def write_folder(root):
    """The first --num_images training images of --dataset as root/<class>/<i>.png."""
    import numpy as np

    from tfvae import data
    from tfvae.images import write_png

    info = data.dataset_info(FLAGS.dataset, FLAGS.tfds_data_dir, FLAGS.tfds_manual_dir)
    names = info.class_names or [str(i) for i in range(info.num_classes or 1)]
    ds = data.load_dataset(FLAGS.dataset, f"train[:{FLAGS.num_images}]", 500,
                           binarize=None, data_dir=FLAGS.tfds_data_dir,
                           manual_dir=FLAGS.tfds_manual_dir, shuffle=False,
                           with_labels=True)
    index = 0
    for images, labels in ds:
        for image, label in zip(np.rint(images.numpy() * 255).astype(np.uint8),
                                labels.numpy()):
            write_png(os.path.join(root, names[label].replace("/", "_"),
                                   f"{index:06d}.png"), image)
            index += 1
    return index


def train_rate(work_dir, name, dataset_flags):
    """Median images/s of one CLI run after its first epoch."""
    output = os.path.join(work_dir, name)
    command = [sys.executable, "-m", "tfvae.train", f"--flagfile={FLAGS.config}",
               *dataset_flags, f"--epochs={FLAGS.epochs}", "--validation_split=",
               "--noexport", "--nolog_images", "--verbose=0", "--early_stopping_patience=0",
               f"--output_dir={output}"]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"the {name} run failed: "
                           f"{(result.stderr.strip().splitlines() or ['?'])[-1]}")
    with open(os.path.join(output, "metrics.json")) as f:
        rates = json.load(f)["images_per_s"]
    return statistics.median(rates[1:])


@cli.interruptible(PROGRAM, "nothing was written.")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    from tfvae import data, rundir

    if not os.path.isfile(FLAGS.config):
        cli.fail(PROGRAM, f"--config {FLAGS.config} does not exist.")
    user_files.check_writable(FLAGS.output)
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="folder_benchmark_")
    tfds = [f"--tfds_data_dir={FLAGS.tfds_data_dir}"] if FLAGS.tfds_data_dir else []
    tfds += [f"--tfds_manual_dir={FLAGS.tfds_manual_dir}"] if FLAGS.tfds_manual_dir else []
    try:
        count = write_folder(os.path.join(work_dir, "images"))
        print(f"wrote {count} PNG files to {work_dir}/images", flush=True)
        folder = train_rate(work_dir, "folder", [
            f"--dataset=folder:{work_dir}/images", "--train_split=train",
            "--test_split=test"])
        reference = train_rate(work_dir, "tfds", [
            f"--dataset={FLAGS.dataset}", f"--train_split=train[:{count * 8 // 10}]",
            "--test_split=test[:1000]", *tfds])
    except (ValueError, OSError, RuntimeError, data.DataUnavailableError) as error:
        cli.fail(PROGRAM, error)
    finally:
        if not FLAGS.work_dir:
            import shutil
            shutil.rmtree(work_dir, ignore_errors=True)
    ratio = folder / reference
    verdict = "met" if ratio >= TARGET_RATIO else "NOT met"
    machine = rundir.machine_info()
    print(f"machine: {machine}")
    print(f"folder: {folder:,.0f} images/s; TFDS: {reference:,.0f} images/s; ratio "
          f"{ratio:.2f} (target >= {TARGET_RATIO:.2f}: {verdict})")
    if FLAGS.output:
        user_files.write_json(FLAGS.output, {
            "folder_images_per_s": folder, "tfds_images_per_s": reference,
            "ratio": ratio, "target": TARGET_RATIO, "num_images": count,
            "machine": machine})


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
