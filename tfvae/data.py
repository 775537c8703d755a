"""TFDS image datasets as `tf.data` pipelines of float32 images in [0, 1].

Datasets:

* `binarized_mnist` (Larochelle & Murray 2011): the fixed binarization of MNIST used
  across the VAE literature; splits train (50k) / validation (10k) / test (10k).
  Already binary, so `binarize` is ignored.
* `mnist`, `fashion_mnist`: grey levels g in [0, 1] (splits train / test). With
  `binarize="dynamic"` every epoch sees a fresh draw x ~ Bernoulli(g) (Salakhutdinov &
  Murray 2008); `"static"` draws once per example (a fixed seed), so every epoch and
  every run sees the same binary images; `None` keeps the grey levels (Gaussian
  likelihood).
* any other TFDS dataset with an `image` feature of fixed shape, as [0, 1] floats.

Pipeline: decode -> [static draw] -> cache (uint8) -> shuffle -> batch -> to float32
and [dynamic draw] on whole batches -> prefetch. Nothing runs in Python per example,
and the dynamic draw comes after the cache, so it changes every epoch.

Offline use: TFDS looks for the source files (named by their download URLs) in
`manual_dir` before trying the network; `data_dir` is where the prepared dataset lives.
Fashion-MNIST from Debian's `dataset-fashion-mnist` package
(`manual_dir="/usr/share/datasets/fashion-mnist"`) is re-gzipped there; its decompressed
contents are checked against recorded SHA-256 sums and the original files TFDS expects
are rebuilt from it (`tfvae.mirrors`), so TFDS's own checksums still hold.

Data of your own (`tfvae.user_data`), by the same names in the Python API and in
`--dataset`:

* `folder:DIR` -- the PNG and JPEG files under DIR (.png, .jpg, .jpeg; hidden files
  and other files are ignored). Subfolders of DIR are classes: labels 0, 1, ... in the
  sorted order of their names, all images below a class folder count. Without
  subfolders the images have no labels. An alpha channel is dropped (RGBA images are
  read as RGB, grey+alpha as greyscale). All images must have one shape (H, W, C);
  `folder:DIR,resize=HxW` resizes height and width instead (antialiased). Images are
  decoded once per process and kept in memory as uint8.
* `npy:FILE.npy` or `npy:FILE.npy,labels=LABELS.npy` -- images [N, H, W, C] (C is 1
  or 3) or [N, H, W] (greyscale), uint8 0-255 (integers that are all 0 or 1: binary) or
  floats in [0, 1] (the rules of `tfvae.checks`); labels: N integer class ids >= 0
  (num_classes = the largest + 1).

Splits of your own data: train / validation / test are 80 / 10 / 10 % of the images
by a hash of each file's path relative to DIR (for npy: of its row number), so an
image never changes split when others are added, and within a split the order is by
that hash (fixed, pseudo-random), so slices are fair samples. A DIR whose subfolders
are only `train` and optionally `validation` and `test` uses those folders as the
splits instead (each one's subfolders are the classes, named alike across splits).
TFDS split strings work on top: 'train[:90%]', 'train+validation', 'all'. Image sizes
other than 28 x 28 flow through: `dataset_info` gives image_shape, num_examples per
split, num_classes and class_names.
"""

import collections
import math
import os
import re
import socket
import tempfile
import urllib.parse
import zlib

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfvae import checks, mirrors, user_data

# Datasets with a known, tested pipeline; any other TFDS image dataset also works.
SUPPORTED = ("binarized_mnist", "mnist", "fashion_mnist")
BINARIZATIONS = ("static", "dynamic", None)
# Datasets stored as {0, 1} uint8 pixels: no scaling, no binarization.
_ALREADY_BINARY = ("binarized_mnist",)
# Cache a split in memory when its uint8 images take at most this many bytes.
_CACHE_LIMIT_BYTES = 2 << 30
_SHUFFLE_LIMIT_BYTES = 256 << 20


class DataUnavailableError(RuntimeError):
    """The dataset is neither prepared in `data_dir` nor obtainable."""


DatasetInfo = collections.namedtuple(
    "DatasetInfo", ["name", "image_shape", "num_examples", "num_classes", "class_names",
                    "pixels"], defaults=(None, None))
DatasetInfo.__doc__ = """What a model and trainer need to know about a dataset.

    image_shape: (H, W, C). num_examples: {split name: count}, empty when unknown
    (e.g. under `tfds.testing.mock_data`). num_classes: for `with_labels`, or None.
    class_names: the name of each label id (a tuple of num_classes), or None.
    pixels: what the stored pixels are, one of `PIXELS` (the trainer's
    --likelihood=auto reads it: `distributions.default_likelihood`), or None.
"""
# "binary": 0 or 1; "8-bit": integer levels 0..255; "real": values in [0, 1].
PIXELS = ("binary", "8-bit", "real")


def _check_binarize(binarize):
    if binarize == "none":
        binarize = None
    if binarize not in BINARIZATIONS:
        raise ValueError(f"Unknown binarization {binarize!r}; expected static, dynamic "
                         "or none.")
    return binarize


def _source_files(builder):
    return sorted({info.filename for info in (builder.url_infos or {}).values()
                   if info.filename})


def _missing_data_message(builder, reason):
    files = _source_files(builder)
    where = (f"put {', '.join(files)} in one directory" if files
             else "put the files that the TFDS catalog lists for it in one directory")
    return (f"Dataset {builder.name!r} is not prepared in {builder.data_dir_root} and "
            f"cannot be downloaded ({reason}). Offline: {where} and pass it as "
            f"--tfds_manual_dir (manual_dir=...), e.g. "
            f"--tfds_manual_dir=../shared/data/{builder.name}.")


def _damaged(path, reason):
    return DataUnavailableError(f"{path} is damaged ({reason}); replace it with a good "
                                "copy of the file.")


def _check_sizes(builder, manual_dir):
    """DataUnavailableError naming a manual file whose size is not the registered one
    (a cut-short copy), before TFDS hashes them all and blames the --tfds_manual_dir."""
    for info in (builder.url_infos or {}).values():
        path = os.path.join(manual_dir, info.filename or "")
        if info.filename and info.size and os.path.isfile(path):
            size, want = os.path.getsize(path), int(info.size)
            if size != want:
                raise _damaged(path, f"{'cut short: ' if size < want else ''}{size:,} "
                                     f"bytes, TFDS registers {want:,}")


def _wrong_checksum(error):
    """TFDS's NonMatchingChecksumError as one line naming the file, or None."""
    found = re.search(r"downloaded to (.+?), has wrong checksum", str(error))
    if type(error).__name__ != "NonMatchingChecksumError" or not found:
        return None
    return _damaged(found.group(1), "its SHA-256 is not the one TFDS registers")


def _unreachable_host(builder):
    """A download host that does not resolve (no internet), or None."""
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                           "http_proxy")):
        return None  # A proxy resolves names for us.
    hosts = {urllib.parse.urlparse(url).hostname for url in (builder.url_infos or {})}
    for host in sorted(h for h in hosts if h):
        try:
            socket.getaddrinfo(host, 443)
        except OSError:
            return host
    return None


def _tfds_is_mocked():
    """True inside `tfds.testing.mock_data`, whose fake data needs no preparation."""
    prepare = tfds.core.DatasetBuilder.download_and_prepare
    return getattr(prepare, "__name__", "") == "mock_download_and_prepare"


def get_builder(name, data_dir=None, manual_dir=None):
    """The TFDS builder of `name`, prepared in `data_dir` (from `manual_dir` if given).

    Raises a one-line ValueError for an unknown name and `DataUnavailableError` when
    the data is neither prepared nor obtainable; both say what to do.
    """
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        raise ValueError(f"Unknown dataset {name!r}; supported: {', '.join(SUPPORTED)}, "
                         "any TFDS image dataset (tfds.list_builders()), folder:DIR (PNG "
                         "or JPEG files) or npy:FILE.npy.") from None
    if builder.is_prepared() or _tfds_is_mocked():
        return builder
    files = _source_files(builder)
    if manual_dir:
        missing = [f for f in files if not os.path.exists(os.path.join(manual_dir, f))]
        if missing:
            raise DataUnavailableError(_missing_data_message(
                builder, f"{', '.join(missing)} not found in {manual_dir}"))
    else:
        host = _unreachable_host(builder)
        if host:  # Fail now rather than after minutes of download retries.
            raise DataUnavailableError(_missing_data_message(
                builder, f"no manual dir given and {host} is unreachable"))
    with tempfile.TemporaryDirectory(prefix="tfvae_manual_") as staging:
        if manual_dir:  # A re-packed mirror (Debian's Fashion-MNIST): rebuild originals.
            registered = {info.filename: info.checksum
                          for info in (builder.url_infos or {}).values() if info.filename}
            try:
                manual_dir = mirrors.manual_dir_for(name, manual_dir, registered, staging)
            except mirrors.MirrorError as error:
                raise DataUnavailableError(str(error)) from None
            _check_sizes(builder, manual_dir)
        try:
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
        except Exception as error:  # noqa: BLE001 -- TFDS raises many kinds
            if _wrong_checksum(error):
                raise _wrong_checksum(error) from error
            first_line = checks.first_line(error)
            raise DataUnavailableError(_missing_data_message(builder, first_line)) \
                from error
    return builder


def _image_feature(builder):
    features = builder.info.features
    if "image" not in features:
        raise ValueError(f"Dataset {builder.name!r} has no 'image' feature; features: "
                         f"{', '.join(features.keys())}.")
    shape = tuple(features["image"].shape)
    if len(shape) != 3 or None in shape:
        raise ValueError(f"Dataset {builder.name!r} has images of varying shape {shape}; "
                         "only fixed-size images are supported.")
    return features["image"]


def _num_examples(builder, split):
    """Examples in `split` (slicing allowed), or None when TFDS does not know."""
    if not builder.info.splits:  # e.g. tfds.testing.mock_data
        return None
    try:
        return builder.info.splits[split].num_examples
    except (KeyError, ValueError):
        raise ValueError(f"Unknown split {split!r} for {builder.name}; it has "
                         f"{', '.join(builder.info.splits.keys())} (slices such as "
                         "'train[:90%]' work too).") from None


# A dataset as the pipeline sees it: its info, how its pixels are stored, and a reader
# of one split as a tf.data of tuples (image[, label]) in a fixed or file-shuffled order.
_Source = collections.namedtuple(
    "_Source", ["info", "dtype", "scale", "has_labels", "count", "read"])


def _tfds_source(name, data_dir, manual_dir):
    builder = get_builder(name, data_dir, manual_dir)
    feature = _image_feature(builder)
    dtype = tf.as_dtype(feature.tf_dtype)
    features = builder.info.features
    labels = features["label"] if "label" in features else None
    info = DatasetInfo(
        name=name,
        image_shape=tuple(int(d) for d in feature.shape),
        num_examples={k: v.num_examples for k, v in builder.info.splits.items()},
        num_classes=getattr(labels, "num_classes", None),
        class_names=tuple(labels.names) if getattr(labels, "names", None) else None,
        pixels=_tfds_pixels(name, dtype))

    def read(split, with_labels, shuffle_files, seed):
        keys = ("image", "label") if with_labels else ("image",)
        ds = builder.as_dataset(split=split, shuffle_files=shuffle_files,
                                read_config=tfds.ReadConfig(shuffle_seed=seed))
        return ds.map(lambda ex: tuple(ex[k] for k in keys),
                      num_parallel_calls=tf.data.AUTOTUNE)

    # binarized_mnist stores {0, 1} as uint8: no scaling.
    scale = 1.0 if name in _ALREADY_BINARY or dtype.is_floating else float(dtype.max)
    return _Source(info, dtype, scale, labels is not None,
                   lambda split: _num_examples(builder, split), read)


def _tfds_pixels(name, dtype):
    if name in _ALREADY_BINARY:
        return "binary"
    return "8-bit" if dtype == tf.uint8 else "real"


def _user_pixels(images, scale):
    if np.issubdtype(images.dtype, np.integer):
        return "8-bit" if scale == 255.0 else "binary"
    return "binary" if checks.is_binary(images) else "real"


def _user_source(name):
    data = user_data.load(name)
    info = DatasetInfo(
        name=name, image_shape=data.image_shape,
        num_examples={k: len(v) for k, v in data.splits.items()},
        num_classes=None if data.class_names is None else len(data.class_names),
        class_names=data.class_names, pixels=_user_pixels(data.images, data.scale))

    def read(split, with_labels, shuffle_files, seed):
        del shuffle_files, seed  # In memory: the pipeline's shuffle is all there is.
        index = data.indices(split)
        arrays = (data.images[index],) + ((data.labels[index],) if with_labels else ())
        return tf.data.Dataset.from_tensor_slices(arrays)

    return _Source(info, tf.as_dtype(data.images.dtype), data.scale,
                   data.labels is not None, lambda split: len(data.indices(split)), read)


def _source(name, data_dir=None, manual_dir=None):
    if user_data.is_user_dataset(name):
        return _user_source(name)
    return _tfds_source(name, data_dir, manual_dir)


def dataset_info(name, data_dir=None, manual_dir=None):
    """`DatasetInfo` of `name`, preparing the data first if needed (see `get_builder`).

    `name` is a TFDS name or `folder:DIR` / `npy:FILE.npy` (see the module docstring),
    whose files are read and checked here (once per process)."""
    return _source(name, data_dir, manual_dir).info


def short_name(name):
    """`name` made safe for a file name: 'mnist', 'folder_photos', 'npy_images'."""
    return user_data.short_name(name)


def random_rows(total, count, seed, shuffled=False):
    """Sorted indices of `count` of `total` rows drawn without replacement with `seed`,
    or None (all rows) when there are no more or `count` is 0. The subset to evaluate
    on: a split can be ordered (binarized MNIST's test rows are: the first 500 average
    ~101 nats, the next 1,500 ~64), and a prefix then gives a biased figure.

    shuffled: the rows in an order drawn with `seed` instead, all of them a permutation
    (never None): the order of an evaluation that reports while it runs, whose
    finished rows are then a random subset at every moment.
    """
    rng = np.random.default_rng(seed)
    if shuffled:
        count = total if not count or count > total else count
        return rng.choice(total, count, replace=False) if total else None
    if not count or not total or total <= count:
        return None
    return np.sort(rng.choice(total, count, replace=False))


def _split_seed(seed, split):
    """A per-split seed, so that splits do not share binarization noise."""
    return (0 if seed is None else int(seed)) * 1_000_003 + zlib.crc32(split.encode())


def load_dataset(name, split, batch_size, *, binarize="dynamic", data_dir=None,
                 manual_dir=None, shuffle=True, seed=None, repeat=False,
                 drop_remainder=False, with_labels=False, cache="auto"):
    """A `tf.data.Dataset` of float32 image batches [B, H, W, C] in [0, 1].

    Args:
        name: TFDS name, e.g. "binarized_mnist", "mnist", "fashion_mnist", or data of
            your own: "folder:DIR", "npy:FILE.npy[,labels=LABELS.npy]" (module
            docstring).
        split: TFDS split, slices allowed ("train[:50000]").
        batch_size: examples per batch (the global batch under a strategy).
        binarize: "static", "dynamic" or None (grey levels); ignored for
            already binary datasets.
        data_dir: where TFDS keeps prepared datasets (TFDS default when None).
        manual_dir: directory holding the source files for offline preparation.
            Both are ignored for folder: and npy: datasets.
        shuffle: reshuffle every epoch (with `seed`: the same order in every run and
            on every worker, which multi-worker sharding needs).
        seed: seeds the shuffle and the binarization draws.
        repeat: repeat forever (for `fit(steps_per_epoch=...)`).
        drop_remainder: drop the last partial batch (static shapes, e.g. for TPUs).
        with_labels: yield (images, labels int64 [B]) for datasets with labels: a
            TFDS "label" feature, class subfolders, or a labels file; "inputs"
            yields a conditional VAE's inputs {"images": [B, H, W, C], "labels": [B]}.
        cache: True, False or "auto" (in memory when the split's uint8 images fit
            in 2 GiB or its size is unknown).

    Raises:
        ValueError: unknown dataset or split, an empty split, labels requested where
            there are none, or images of varying shape; for folder: and npy: data
            also missing or unreadable files and bad arrays (`checks.InputError`).
        DataUnavailableError: the data can be neither found nor downloaded.
    """
    binarize = _check_binarize(binarize)
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    source = _source(name, data_dir, manual_dir)
    num_examples = _check_split(source, name, split, with_labels)
    if name in _ALREADY_BINARY:
        binarize = None
    split_bytes = None if num_examples is None else \
        num_examples * math.prod(source.info.image_shape) * source.dtype.size
    # A static draw is keyed by the example's position, so the file order must be fixed.
    ds = source.read(split, with_labels, shuffle and binarize != "static", seed)
    scale = source.scale
    if binarize == "static":
        ds, scale = _draw_once(ds, scale, _split_seed(seed, split)), 1.0
    if cache is True or (cache == "auto" and (
            split_bytes is None or split_bytes <= _CACHE_LIMIT_BYTES)):
        ds = ds.cache()
    if shuffle:
        small = split_bytes is not None and split_bytes <= _SHUFFLE_LIMIT_BYTES
        buffer = max(num_examples, 1) if small else 10_000
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder)
    ds = _as_floats(ds, scale, binarize == "dynamic",
                    None if seed is None else _split_seed(seed, split))
    if not with_labels:
        ds = ds.map(lambda images: images)  # 1-tuples -> plain image tensors
    elif with_labels == "inputs":
        ds = ds.map(lambda images, labels: {"images": images, "labels": labels})
    options = tf.data.Options()
    # Shard by element: correct for any number of files (our datasets have one).
    options.experimental_distribute.auto_shard_policy = \
        tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def _check_split(source, name, split, with_labels):
    """The number of examples in `split` (None when unknown), after checking that it
    has some and, when asked for, labels."""
    if with_labels and not source.has_labels:
        raise ValueError(f"Dataset {name!r} has no labels"
                         + (" (no class subfolders)." if name.startswith("folder:") else
                            " (npy: add ,labels=LABELS.npy)." if name.startswith("npy:")
                            else "."))
    num_examples = source.count(split)
    if num_examples == 0:
        hint = (f" ({sum(source.info.num_examples.values())} images split 80/10/10 by "
                "hash; add images, or use train/ and test/ subfolders or another split)"
                if user_data.is_user_dataset(name) else "")
        raise ValueError(f"Split {split!r} of {name} is empty{hint}.")
    return num_examples


def _draw_once(ds, scale, split_seed):
    """Static binarization: one Bernoulli draw per example, keyed by its position."""
    def draw(index, example):
        image = tf.cast(example[0], tf.float32) / scale
        noise = tf.random.stateless_uniform(tf.shape(image), [split_seed, index])
        return (tf.cast(noise < image, tf.uint8), *example[1:])

    return ds.enumerate().map(draw, num_parallel_calls=tf.data.AUTOTUNE)


def integer_images(images):
    """float32 images of integer pixels, in the graph, by the rule of
    `checks.as_images` applied per batch: divided by 255 unless all are 0 or 1
    (binary images). For tensors and datasets of integers, e.g. uint8 PNG pixels."""
    images = tf.cast(images, tf.float32)
    return images / tf.where(tf.reduce_max(images) > 1.0, 255.0, 1.0)


def _as_floats(ds, scale, dynamic, seed):
    """Batches of stored pixels -> float32 in [0, 1]; with `dynamic`, a fresh
    Bernoulli draw per batch (one [2]-seed each, a new sequence every epoch,
    reproducible when `seed` is given)."""
    if not dynamic:
        return ds.map(lambda *batch: (tf.cast(batch[0], tf.float32) / scale, *batch[1:]),
                      num_parallel_calls=tf.data.AUTOTUNE)
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def draw(batch, batch_seed):
        image = tf.cast(batch[0], tf.float32) / scale
        noise = tf.random.stateless_uniform(tf.shape(image), batch_seed)
        return (tf.cast(noise < image, tf.float32), *batch[1:])

    return tf.data.Dataset.zip(ds, seeds).map(draw, num_parallel_calls=tf.data.AUTOTUNE)


def check_images(dataset, image_shape, description="the dataset", num_classes=None):
    """First batch of `dataset` as numpy, after checking it fits a model for images of
    `image_shape`: float32 [B, H, W, C] in [0, 1] (the pixel rules of `tfvae.checks`).
    A dataset of conditional inputs {"images", "labels"} gives that dict, its labels
    checked to be class ids below `num_classes`. Raises a one-line ValueError.

    Reading one batch of a `cache()`d dataset leaves a partial cache behind that can
    truncate later passes over the same object: check an uncached twin (`cache=False`)
    or `load_dataset(...).take(1)` built for the purpose, as `tfvae.train` does."""
    inputs = check_image_spec(dataset, image_shape, description)
    for element in dataset.take(1):
        batch = tf.nest.map_structure(lambda tensor: tensor.numpy(), element)
        checks.check_values(batch["images"] if inputs else batch, description)
        if inputs and num_classes:
            checks.check_labels(batch["labels"], num_classes, f"the labels of {description}")
        return batch
    raise ValueError(f"{description} is empty.")


# Marks the one line of a failed `checked_values` check inside TensorFlow's error text.
_VALUE_CHECK = "<tfvae-value-check>"


def checked_values(dataset, description="the dataset", unit_range=True):
    """`dataset` whose image batches are checked as they are read: finite and, with
    `unit_range` (binary likelihoods), in [0, 1] (integer pixels in 0..255). A bad
    batch stops the pass with TensorFlow's InvalidArgumentError carrying one line,
    which `value_check_error` finds. The check runs in the input pipeline, beside the
    training step, not in it."""
    line = (f"{description} holds a batch with NaN, Inf or values outside [0, 1] "
            f"(0..255 for integer pixels); {checks.RANGE}." if unit_range else
            f"{description} holds a batch with NaN or Inf; images must be finite.")

    def check(*element):
        element = element[0] if len(element) == 1 else element
        images = element[0] if isinstance(element, tuple) else element
        images = images["images"] if isinstance(images, dict) else images
        values = tf.cast(images, tf.float32)
        if unit_range:
            high = 255.0 if images.dtype.is_integer else 1.0
            valid = tf.reduce_all((values >= 0.0) & (values <= high))  # NaN: False
        else:
            valid = tf.reduce_all(tf.math.is_finite(values))
        with tf.control_dependencies(
                [tf.debugging.Assert(valid, [_VALUE_CHECK + line + _VALUE_CHECK])]):
            return tf.nest.map_structure(tf.identity, element)

    return dataset.map(check)


def value_check_error(error):
    """The one-line ValueError of a failed `checked_values` check in `error` (a
    TensorFlow error), else None."""
    found = re.search(f"{_VALUE_CHECK}(.*?){_VALUE_CHECK}", str(error), re.S)
    return ValueError(found.group(1)) if found else None


def check_image_spec(dataset, image_shape, description="the dataset", integers=False):
    """Checks what `dataset` declares it yields (no element is read, so a user's
    cached pipeline stays whole): float32 images [B, H, W, C] of `image_shape`, alone
    or as a dict's "images"; with `integers`, also integer pixels (which a `VAE` takes
    by `integer_images`). Returns whether it yields such dicts; raises a one-line
    ValueError."""
    want = f"float32 images of shape (batch, {', '.join(map(str, image_shape))}) in [0, 1]"
    spec = dataset.element_spec
    if isinstance(spec, tuple) and spec:
        spec = spec[0]  # Keras's (x, y) or (x, y, weights): x is the images
    inputs = isinstance(spec, dict) and "images" in spec
    image_spec = spec["images"] if inputs else spec
    if not isinstance(image_spec, tf.TensorSpec):
        raise ValueError(f"{description} yields {spec}; the model expects {want}.")
    got_shape = tuple(image_spec.shape) if image_spec.shape.rank is not None else None
    dtype_ok = image_spec.dtype == tf.float32 or integers and image_spec.dtype.is_integer
    if not dtype_ok or got_shape is not None and len(got_shape) != 4 or any(
            got is not None and got != int(want_dim)
            for got, want_dim in zip((got_shape or ())[1:], image_shape)):
        hint = (" Divide 0-255 images by 255 in a map() first."
                if image_spec.dtype.is_integer else "")
        raise ValueError(f"{description} yields {image_spec.dtype.name} images of shape "
                         f"{got_shape}; the model expects {want}.{hint}")
    return inputs
