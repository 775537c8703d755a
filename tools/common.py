"""What the tools share: the data flags, spelled one way, and reading a run back.

The data flags, one spelling each (the trainer's where it has one), defined by
`define_data_flags` (and `define_run_data_flags` for a run's own data); the older
spellings still work as aliases:

    --dataset, --split     a TFDS name (or folder:DIR, npy:FILE.npy) and its split
    --tfds_data_dir        where TFDS keeps prepared datasets     (also --data_dir)
    --tfds_manual_dir      the dataset's source files, for offline preparation
    --images               a .npy of images [N, H, W, C]          (also --images_npy)
    --image_labels         a .npy of their class ids              (also --labels_npy)

A tool calls `define_data_flags(...)` then `flags.adopt_module_key_flags(common)`, so
that its --help lists them. A run, read back one way each:

    load_keras(path)        the VAE of a .keras file, run directory, version folder or
                            preset, and where it lies (its run's config.json)
    load_saved_model(path)  an exported SavedModel
    option(name, config)    a flag given on the command line, else the run's
                            config.json, else the trainer's default
    run_dataset(config)     the dataset a run trained on, as it was read
    split_images(...)       images of a dataset's split, in memory, checked
    npy_images(...)         --images and their --image_labels, checked

Every failure is one `checks.InputError` line. Imports no TensorFlow until a function
needs it (the LiteRT path of `tools.sample` runs without it).
"""

import numpy as np
from absl import flags

from tfvae import checks, user_files

FLAGS = flags.FLAGS
BINARIZATIONS = ("static", "dynamic", "none")


# -- flags ---------------------------------------------------------------------------

def define_data_flags(dataset_help, dataset=None, split="test", images=None):
    """--dataset (default `dataset`), --split (unless `split` is None), the TFDS
    directories and, where `images` says what the tool does with them, --images and
    --image_labels (refused without --images); the older spellings as aliases."""
    flags.DEFINE_string("dataset", dataset, dataset_help)
    if split is not None:
        flags.DEFINE_string("split", split, "Split of --dataset (slices such as "
                            "'test[:1000]' work).")
    flags.DEFINE_string("tfds_data_dir", None, "Where TFDS keeps prepared datasets "
                        "(TFDS default if unset).")
    flags.DEFINE_alias("data_dir", "tfds_data_dir")  # tools.sample's older spelling
    flags.DEFINE_string("tfds_manual_dir", None, "Directory with the dataset's source "
                        "files, for offline preparation.")
    if images:
        flags.DEFINE_string("images", None, "A .npy of images [N, H, W, C] (floats in "
                            f"[0, 1] or integers 0-255) {images}.")
        flags.DEFINE_string("image_labels", None, "A .npy of the class ids of --images "
                            "(one per image, or one for all); a class-conditional "
                            "model needs them.")
        flags.register_multi_flags_validator(
            ["images", "image_labels"], lambda given: given["images"] or not
            given["image_labels"], "--image_labels are the labels of --images: pass both.")
        # The older spellings of tools.evaluate and tools.visualize.
        flags.DEFINE_alias("images_npy", "images")
        flags.DEFINE_alias("labels_npy", "image_labels")


def define_run_data_flags(images):
    """`define_data_flags` for the dataset of a run (`run_dataset`): --dataset,
    --binarization and --seed default to the run's config.json."""
    define_data_flags("TFDS dataset (or folder:DIR, npy:FILE.npy); default: the run's "
                      "config.json, else binarized_mnist.", images=images)
    flags.DEFINE_enum("binarization", None, list(BINARIZATIONS), "Binarization of "
                      "grey-level datasets; default: the run's config.json, else static.")
    flags.DEFINE_integer("seed", None, "Seed of the data pipeline (binarization) and of "
                         "the sampler; default: the run's config.json, else 0.")


def define_temperature_flag():
    """--temperature: one number, or one per stochastic layer (`flag_temperature`)."""
    flags.DEFINE_list("temperature", ["1"], "Sampling temperature: every Gaussian "
                      "prior's spread times t (VAE.sample), one number or one per "
                      "stochastic layer, top first (0.5,1,1,1); an export samples "
                      "through its sample_at_temperature signature.")


def define_guidance_flag():
    """--guidance: the classifier-free guidance weights (`flag_guidance`)."""
    flags.DEFINE_list("guidance", ["0"], "Classifier-free guidance of a class-conditional "
                      "model trained with --context_dropout: the weight w >= 0 of the "
                      "codes, or w,v with v >= 0 the image's (0: none; tfvae.guidance); "
                      "an export samples through its sample_guided signature.")


def flag_guidance(values):
    """--guidance's values as (w, v), floats >= 0 (`checks.check_guidance_value`)."""
    return checks.check_guidance_value(values[0] if len(values) == 1 else values,
                                       "--guidance")


def flag_temperature(values):
    """--temperature's values: one positive number, or a tuple of one per layer."""
    numbers = tuple(checks.check_positive(value, "--temperature") for value in values)
    return numbers[0] if len(numbers) == 1 else numbers


# -- a run ---------------------------------------------------------------------------

def load_keras(path):
    """(the VAE, where it lies) of a .keras file, run directory, version folder holding
    a .keras file or preset name: `rundir.locate_keras`'s "path" and "config" (the
    run's config.json, or {})."""
    from tfvae import keras_files, rundir  # noqa: PLC0415 -- TensorFlow when needed

    location = rundir.locate_keras(path)
    return keras_files.load_keras_model(location["path"]), location


def load_saved_model(path):
    """The exported SavedModel in the folder `path`."""
    import tensorflow as tf  # noqa: PLC0415

    try:
        return tf.saved_model.load(path)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise checks.InputError(f"{path} cannot be loaded as a SavedModel "
                                f"({checks.first_line(error)}).") from None


def option(name, config):
    """The flag `name` given on the command line, else the run's config.json entry,
    else the trainer's default (`tfvae.train.DEFAULTS`)."""
    if FLAGS[name].present:
        return FLAGS[name].value
    from tfvae import train  # noqa: PLC0415

    return config.get(name, train.DEFAULTS.get(name))


def run_dataset(config):
    """(name, `data.load_dataset` options) of the dataset a run trained on, so that its
    test split is binarized as in training: the flags given, else config.json, else
    the trainer's defaults (`option`)."""
    return option("dataset", config), dict(
        binarize=option("binarization", config), seed=option("seed", config),
        data_dir=option("tfds_data_dir", config),
        manual_dir=option("tfds_manual_dir", config))


# -- images --------------------------------------------------------------------------

def split_images(name, split, image_shape, batch_size, count=None, labels=False,
                 num_classes=None, **load):
    """(images, "name[split]"): the first `count` images of a split (all when None) in
    memory, float32 [N, H, W, C] in [0, 1], or {"images", "labels"} with `labels`.

    Read in batches of `batch_size` (a dynamic binarization draws per batch) after the
    first batch is checked (`data.check_images`, labels below `num_classes`). `load`:
    `data.load_dataset`'s binarize, seed, data_dir, manual_dir.
    """
    import tensorflow as tf  # noqa: PLC0415

    from tfvae import data  # noqa: PLC0415

    description = f"{name}[{split}]"

    def read():  # uncached: a partly read tf.data cache drops the unread rest
        return data.load_dataset(name, split, batch_size, shuffle=False, cache=False,
                                 with_labels="inputs" if labels else False, **load)

    first = data.check_images(read().take(1), image_shape, description, num_classes)
    if count and count <= batch_size:
        batches = [first]
    else:
        batches = read() if count is None else read().take(-(-count // batch_size))
        batches = [tf.nest.map_structure(lambda t: t.numpy(), b) for b in batches]
    images = tf.nest.map_structure(lambda *rows: np.concatenate(rows)[:count], *batches)
    return images, description


def npy_images(image_shape, count=None, num_classes=0):
    """(images, their labels or None): the first `count` images of --images (all when
    None), float32 [N, H, W, C] in [0, 1] by the rules of `tfvae.checks`, and of
    --image_labels, one per image or one for all (repeated). A class-conditional
    model (`num_classes`) needs them, as class ids (int32)."""
    images = user_files.load_npy(FLAGS.images)
    labels = _npy_labels(len(images), num_classes)
    images = checks.as_images(images[:count], image_shape, FLAGS.images)
    return images, None if labels is None else labels[:count]


def _npy_labels(count, num_classes):
    """The --image_labels of `count` images, one for each, or None."""
    path = FLAGS.image_labels
    if not path:
        if num_classes:
            raise checks.InputError("the model is class-conditional: give the labels "
                                    "of --images with --image_labels.")
        return None
    labels = np.atleast_1d(user_files.load_npy(path))
    if labels.ndim != 1 or len(labels) not in (1, count):
        raise checks.InputError(
            f"--image_labels {path} holds {len(labels)} labels for the {count} images "
            f"of --images (it has shape {labels.shape}; expected one label per image, "
            f"shape ({count},), or one for all).")
    if num_classes:
        return checks.as_labels(labels, num_classes, count, path)
    return np.broadcast_to(labels, (count,))
