r"""Train a classifier that tfvae ships (tfvae/classifiers/), the same way every time.

    python -m tools.train_classifier --dataset=fashion_mnist \
        --tfds_manual_dir=/usr/share/datasets/fashion-mnist
    python -m tools.train_classifier --dataset=binarized_mnist \
        --tfds_manual_dir=../shared/data/binarized_mnist

Writes DATASET.keras (`tfvae.classifier.build`, without optimizer state) and
DATASET.json (how it was trained, its test accuracy, the machine) into --output_dir,
by default the package's own tfvae/classifiers/. Seeded, with TensorFlow's
deterministic ops. The recipes (`tfvae/classifier.py` says why):

* fashion_mnist: labelled training images, a fresh Bernoulli draw of the grey levels
  every epoch; tested on the test split binarized once with --seed (as
  configs/fashion_mnist_cvae.cfg binarizes it). With --grey_levels: trained and tested
  on the 8-bit grey levels, written as fashion_mnist_grey (the judge of grey models);
  with --architecture=wide too, as fashion_mnist_grey_wide (the judge of label
  consistency).
* binarized_mnist: no labels exist offline, so the classes are k-means clusters
  (--clusters) of the binary training images; test images take their nearest
  centroid's class, and "test_accuracy" is the agreement with that.

Bad input ends with one line `tools.train_classifier: error: ...` and status 1.
"""

import os
import time

import numpy as np
from absl import app, flags

from tfvae import checks, cli, user_files
from tfvae.classifier import ARCHITECTURES
from tools import common

PROGRAM = "tools.train_classifier"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)
RECIPES = ("binarized_mnist", "fashion_mnist")
common.define_data_flags(f"The classifier to train: {' or '.join(RECIPES)}.", split=None)
flags.adopt_module_key_flags(common)
flags.DEFINE_integer("epochs", 8, "Training epochs.", lower_bound=1)
flags.DEFINE_integer("clusters", 10, "binarized_mnist: k-means clusters (classes).",
                     lower_bound=2)
flags.DEFINE_integer("seed", 0, "Seed of the weights, the shuffles, the draws and "
                     "k-means.")
flags.DEFINE_bool("grey_levels", False, "fashion_mnist: train and test on the grey "
                  "levels, not binarized (written as fashion_mnist_grey).")
flags.DEFINE_enum("architecture", "small", ARCHITECTURES, "tfvae.classifier.build's "
                  "network; any but small is written with its name as a suffix.")
flags.DEFINE_string("output_dir", None, "Where DATASET.keras and DATASET.json go; "
                    "default: tfvae/classifiers/ of this checkout.")


def split_arrays(name, split, binarize, labels, load):
    """All images of a split as float32 [N, 28, 28, 1] (and their labels [N]), checked
    by `common.split_images`."""
    batch, _ = common.split_images(name, split, (28, 28, 1), 1000, labels=labels,
                                   binarize=binarize, seed=FLAGS.seed, **load)
    return (batch["images"], batch["labels"]) if labels else batch


def fashion_mnist(load):
    """(training data for `classifier.train`, test images, test labels, record)."""
    from tfvae import data

    grey = FLAGS.grey_levels
    train = data.load_dataset("fashion_mnist", "train", 128,
                              binarize=None if grey else "dynamic", shuffle=True,
                              seed=FLAGS.seed, with_labels=True, **load)
    test_images, test_labels = split_arrays("fashion_mnist", "test",
                                            None if grey else "static", True, load)
    info = data.dataset_info("fashion_mnist", **load)
    return train, test_images, test_labels, {
        "classes": list(info.class_names),
        "train": "fashion_mnist[train], 60,000 images, " + (
            "grey levels" if grey else "a fresh Bernoulli draw of the grey levels every "
                                       "epoch"),
        "test": "fashion_mnist[test], 10,000 images, " + (
            "grey levels" if grey else f"binarized once with seed {FLAGS.seed}")}


def binarized_mnist(load):
    """As `fashion_mnist`, with k-means clusters as the classes."""
    from tfvae import classifier

    train_images = split_arrays("binarized_mnist", "train", None, False, load)
    test_images = split_arrays("binarized_mnist", "test", None, False, load)
    print(f"k-means, {FLAGS.clusters} clusters of {len(train_images)} images ...",
          flush=True)
    train_labels, centroids = classifier.kmeans(train_images, FLAGS.clusters, FLAGS.seed)
    test_labels = classifier.nearest(test_images, centroids)
    sizes = np.bincount(train_labels, minlength=FLAGS.clusters).tolist()
    return (train_images, train_labels), test_images, test_labels, {
        "classes": [f"k-means cluster {c}" for c in range(FLAGS.clusters)],
        "pseudo_labels": True,
        "cluster_sizes": sizes,
        "train": f"binarized_mnist[train], {len(train_images)} images; classes: "
                 f"k-means clusters (k-means++ seeded with {FLAGS.seed}) in pixel "
                 "space, as binarized MNIST has no labels",
        "test": f"binarized_mnist[test], {len(test_images)} images, each labelled by "
                "its nearest centroid: test_accuracy is the agreement with it, not "
                "digit accuracy"}


@cli.interruptible(PROGRAM, "nothing was written.")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    import keras
    import tensorflow as tf

    from tfvae import classifier, data, rundir

    output_dir = FLAGS.output_dir or classifier.DIRECTORY
    name = classifier.JUDGES.get((FLAGS.dataset, not FLAGS.grey_levels), FLAGS.dataset)
    name += "" if FLAGS.architecture == "small" else f"_{FLAGS.architecture}"
    path = os.path.join(output_dir, f"{name}.keras")
    load = dict(data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir)
    start = time.perf_counter()
    try:
        if not FLAGS.dataset:
            raise checks.InputError(f"give --dataset: {' or '.join(RECIPES)}.")
        checks.choice("--dataset", FLAGS.dataset, RECIPES)
        if FLAGS.grey_levels and FLAGS.dataset != "fashion_mnist":
            raise checks.InputError("--grey_levels is for fashion_mnist (binarized_mnist "
                                    "has no grey levels).")
        user_files.check_writable(path, "--output_dir")
        recipe = fashion_mnist if FLAGS.dataset == "fashion_mnist" else binarized_mnist
        train, test_images, test_labels, record = recipe(load)
    except (ValueError, OSError, data.DataUnavailableError) as error:
        cli.fail(PROGRAM, error)
    tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(FLAGS.seed)  # the initial weights too
    model = classifier.build(test_images.shape[1:], len(record["classes"]),
                             architecture=FLAGS.architecture)
    classifier.train(model, train, FLAGS.epochs, FLAGS.seed, verbose=2)
    accuracy = classifier.accuracy(model, test_images, test_labels)
    classifier.save(model, path)
    record.update(
        dataset=FLAGS.dataset, grey_levels=FLAGS.grey_levels,
        keras_file=os.path.basename(path), architecture=FLAGS.architecture,
        num_classes=len(record["classes"]), test_accuracy=accuracy,
        test_images=len(test_images), feature_layer=classifier.FEATURES,
        feature_dim=int(model.get_layer(classifier.FEATURES).units),
        epochs=FLAGS.epochs, seed=FLAGS.seed, size_bytes=os.path.getsize(path),
        seconds=round(time.perf_counter() - start, 1), keras=keras.__version__,
        command=f"python -m tools.train_classifier --dataset={FLAGS.dataset} "
                f"--epochs={FLAGS.epochs} --seed={FLAGS.seed}"
                + (f" --clusters={FLAGS.clusters}" if FLAGS.dataset == "binarized_mnist"
                   else "") + (" --grey_levels" if FLAGS.grey_levels else "")
                + (f" --architecture={FLAGS.architecture}"
                   if FLAGS.architecture != "small" else ""),
        machine=rundir.machine_info(), date=time.strftime("%Y-%m-%d %H:%M:%S"))
    user_files.write_json(os.path.join(output_dir, f"{name}.json"), record)
    print(f"test accuracy {accuracy:.4f}; wrote {path} "
          f"({record['size_bytes'] / 1e3:.0f} KB) in {record['seconds']:.0f} s")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
