"""Datasets of the user's own, read into memory once: `folder:DIR` and `npy:FILE.npy`.

`tfvae.data` serves them through the same pipeline as TFDS datasets; its module
docstring gives the naming, split and label conventions. Here: reading, checking,
splitting. Every mistake is one `checks.InputError` line naming the file.

Images are decoded once per process and kept in memory (uint8 unless given as floats):
meant for up to a few GB of pixels, e.g. 100,000 images of 64 x 64 x 3 take 1.2 GB.
"""

import hashlib
import os
import re

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tfvae import checks, user_files

KINDS = {"folder": ("resize",), "npy": ("labels",)}  # kind -> options it takes
SPLITS = ("train", "validation", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
# Hash buckets (of 10) per split when the files do not name their splits: 80/10/10.
BUCKETS = {"train": range(0, 8), "validation": range(8, 9), "test": range(9, 10)}
_MEMO_SIZE = 2  # Decoded datasets kept per process (the trainer opens one repeatedly).
_memo = {}


class UserData:
    """Images [N, H, W, C] (uint8, or float32 in [0, 1]) with optional int64 labels.

    Attributes: name, images, labels (or None), class_names (tuple, or None), scale
    (divisor to [0, 1]), splits ({split: indices in a fixed pseudo-random order}).
    """

    def __init__(self, name, images, labels, class_names, scale, splits):
        self.name = name
        self.images = images
        self.labels = labels
        self.class_names = class_names
        self.scale = scale
        self.splits = splits

    @property
    def image_shape(self):
        return tuple(int(d) for d in self.images.shape[1:])

    def indices(self, split):
        """Indices of `split`: a name of `splits` or a TFDS split string of them
        ('train[:90%]', 'train+validation', 'all')."""
        infos = {name: _SplitInfo(name, len(index)) for name, index in self.splits.items()}
        try:
            parts = tfds.core.ReadInstruction.from_spec(split).to_absolute(infos)
        except (ValueError, NotImplementedError, AssertionError, TypeError):
            raise checks.InputError(
                f"Unknown split {split!r} for {self.name}; it has "
                f"{', '.join(self.splits)} (slices such as 'train[:90%]' and sums such as "
                "'train+validation' work too; --validation_split='' for none).") from None
        return np.concatenate([self.splits[part.splitname][part.from_:part.to]
                               for part in parts] or [np.zeros([0], np.int64)])


class _SplitInfo:
    def __init__(self, name, num_examples):
        self.name = name
        self.num_examples = num_examples
        self.shard_lengths = [num_examples]


def is_user_dataset(name):
    return isinstance(name, str) and name.split(":", 1)[0] in KINDS and ":" in name


def parse(name):
    """('folder' or 'npy', path, {option: value}) from 'kind:PATH[,key=value...]'."""
    kind, rest = name.split(":", 1)
    path, *pairs = rest.split(",")
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in KINDS[kind] or not value:
            raise checks.InputError(
                f"Bad option {pair!r} in dataset {name!r}; {kind}: takes "
                f"{', '.join(k + '=...' for k in KINDS[kind])} (e.g. "
                f"{_EXAMPLES[kind]}).")
        options[key] = _parse_size(name, value) if key == "resize" else value
    if not path:
        raise checks.InputError(f"Dataset {name!r} names no path; e.g. {_EXAMPLES[kind]}.")
    return kind, os.path.expanduser(path), options


_EXAMPLES = {"folder": "folder:photos,resize=64x64",
             "npy": "npy:images.npy,labels=labels.npy"}


def short_name(name):
    """A file-name-safe name for a dataset: 'folder_photos', 'npy_images', 'mnist'."""
    if not is_user_dataset(name):
        return name
    kind, path, _ = parse(name)
    stem = os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)
    return f"{kind}_{safe or 'data'}"


def load(name):
    """The `UserData` of a 'folder:...' or 'npy:...' name (decoded once per process)."""
    kind, path, options = parse(name)
    key = (name, *_fingerprint(kind, path, options))
    if key not in _memo:
        data = _load_folder(name, path, options) if kind == "folder" else _load_npy(
            name, path, options)
        while len(_memo) >= _MEMO_SIZE:
            _memo.pop(next(iter(_memo)))
        _memo[key] = data
    return _memo[key]


def _stat(path):
    try:
        stat = os.stat(path)
    except OSError:
        return (path, None)
    return (path, stat.st_size, stat.st_mtime_ns)


def _fingerprint(kind, path, options):
    if kind == "npy":
        return (_stat(path), _stat(options.get("labels", "")))
    files, _, _, class_names = _image_files(path)
    return (class_names, *(_stat(os.path.join(path, f)) for f in files))


# -- splits -----------------------------------------------------------------------------

def _hashes(keys):
    """A fixed 64-bit hash of each key: the split bucket and the order within it."""
    return np.array([int.from_bytes(hashlib.sha256(k.encode()).digest()[:8], "little")
                     for k in keys], np.uint64)


def hash_splits(keys):
    """{split: indices} for 80/10/10 train/validation/test by hash of each key.

    A key's split never changes when others are added or removed; within a split the
    order is by hash (pseudo-random, fixed), so slices such as 'train[:10%]' are fair
    samples.
    """
    hashes = _hashes(keys)
    bucket = (hashes % np.uint64(10)).astype(np.int64)
    splits = {}
    for split, buckets in BUCKETS.items():
        index = np.flatnonzero(np.isin(bucket, list(buckets)))
        splits[split] = index[np.argsort(hashes[index], kind="stable")]
    return splits


# -- folders ----------------------------------------------------------------------------

def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _subdirs(path):
    return sorted(d for d in os.listdir(path)
                  if not d.startswith(".") and os.path.isdir(os.path.join(path, d)))


def _walk_images(path):
    """Image files under `path` (recursively), relative to it, sorted."""
    found = []
    for root, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        rel = os.path.relpath(root, path)
        found.extend(os.path.normpath(os.path.join(rel, f)) for f in files if _is_image(f))
    return sorted(found)


def _top_images(path):
    return sorted(f for f in os.listdir(path)
                  if _is_image(f) and os.path.isfile(os.path.join(path, f)))


def _image_files(root):
    """(files relative to root, their split or None, their class name or None, the
    sorted class folder names or None)."""
    if not os.path.isdir(root):
        what = "is not a directory" if os.path.exists(root) else "does not exist"
        raise checks.InputError(f"Image folder {root} {what}; folder: takes a directory "
                                "of PNG or JPEG images (class subfolders optional).")
    subdirs = _subdirs(root)
    split_mode = bool(subdirs) and set(subdirs) <= set(SPLITS) and "train" in subdirs
    groups = [(s, os.path.join(root, s)) for s in subdirs] if split_mode else [
        (None, root)]
    files, splits, classes = [], [], []
    has_classes, class_names = set(), set()
    for split, top in groups:
        class_dirs = _subdirs(top)
        loose = _top_images(top)
        if class_dirs and loose:
            raise checks.InputError(
                f"{os.path.join(top, loose[0])} lies beside class folders "
                f"({', '.join(class_dirs[:3])}{', ...' if len(class_dirs) > 3 else ''}); "
                "put every image in a class folder, or none.")
        has_classes.add(bool(class_dirs))
        class_names.update(class_dirs)
        for name in class_dirs or [None]:
            base = top if name is None else os.path.join(top, name)
            for f in (_walk_images(base) if name else loose):
                rel = os.path.relpath(os.path.join(base, f), root)
                files.append(rel)
                splits.append(split)
                classes.append(name)
    if len(has_classes) > 1:
        raise checks.InputError(f"Some split folders of {root} have class folders and "
                                "some do not; give every split the same layout.")
    if not files:
        raise checks.InputError(f"Image folder {root} holds no PNG or JPEG images "
                                f"({', '.join(IMAGE_EXTENSIONS)}).")
    return files, splits, classes, tuple(sorted(class_names)) or None


def _parse_size(name, value):
    try:
        height, width = (int(v) for v in value.lower().split("x"))
        if height < 1 or width < 1:
            raise ValueError
    except ValueError:
        raise checks.InputError(f"Bad resize={value!r} in dataset {name!r}; give "
                                "HEIGHTxWIDTH, e.g. resize=64x64.") from None
    return height, width


def _decode(path, size):
    """uint8 [H, W, 1 or 3]: an alpha channel (RGBA, grey+alpha) is dropped."""
    image = tf.io.decode_image(tf.io.read_file(path), expand_animations=False)
    channels = tf.shape(image)[-1]
    image = image[..., :channels - tf.cast(channels % 2 == 0, tf.int32)]
    if size is not None:
        image = tf.image.resize(image, size, antialias=True)
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    return image


def _decode_error(path, size):
    """TensorFlow's reason for not decoding `path`, without the pipeline's trimmings."""
    try:
        _decode(path, size)
    except tf.errors.OpError as error:
        reason = (error.message.strip().splitlines() or [type(error).__name__])[0]
        reason = re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", reason)
        return reason.split(" [Op:")[0].rstrip(". ")
    return "it failed inside the decoding pipeline"


def _shape_text(shape):
    return "x".join(map(str, shape))


def _load_folder(name, root, options):
    size = options.get("resize")
    files, splits, classes, class_names = _image_files(root)
    paths = [os.path.join(root, f) for f in files]
    decoded = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda p: _decode(p, size), num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True).prefetch(64)
    images, iterator = None, iter(decoded)
    for i, path in enumerate(paths):
        try:
            image = next(iterator).numpy()
        except tf.errors.OpError:
            raise checks.InputError(f"{path} cannot be read as a PNG or JPEG image "
                                    f"({_decode_error(path, size)}).") from None
        if images is None:
            images = np.empty((len(paths), *image.shape), np.uint8)
        elif image.shape != images.shape[1:]:
            same_channels = image.shape[-1] == images.shape[-1]
            fix = (f"resize them, or name the dataset {name.split(',')[0]},resize="
                   f"{images.shape[1]}x{images.shape[2]} to resize all to the first's "
                   "height and width" if same_channels else
                   "convert them all to RGB or all to greyscale")
            raise checks.InputError(
                f"{path} is {_shape_text(image.shape)} but {paths[0]} (the first image) "
                f"is {_shape_text(images.shape[1:])} (height x width x channels): the "
                f"images of a folder dataset must share one shape; {fix}.")
        images[i] = image
    labels = None
    if class_names:
        ids = {c: i for i, c in enumerate(class_names)}
        labels = np.array([ids[c] for c in classes], np.int64)
    keys = [f.replace(os.sep, "/") for f in files]
    if splits[0] is None:
        split_index = hash_splits(keys)
    else:  # train/, validation/, test/ folders: their files, in hash order.
        split_index = {}
        hashes = _hashes(keys)
        for split in SPLITS:
            index = np.array([i for i, s in enumerate(splits) if s == split], np.int64)
            if len(index):
                split_index[split] = index[np.argsort(hashes[index], kind="stable")]
    return UserData(name, images, labels, class_names, 255.0, split_index)


# -- arrays -----------------------------------------------------------------------------

def _load_npy(name, path, options):
    array = user_files.load_npy(path)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    if array.ndim not in (3, 4) or not array.size:
        raise checks.InputError(
            f"{path} has shape {array.shape}; npy: takes images [N, H, W, C] or [N, H, W] "
            "(greyscale) with N >= 1.")
    shape = (*array.shape[1:], 1) if array.ndim == 3 else array.shape[1:]
    if shape[-1] not in (1, 3):
        raise checks.InputError(
            f"{path} has shape {array.shape}: {shape[-1]} channels; npy: takes greyscale "
            "(1) or RGB (3) images (drop an alpha channel: array[..., :-1]).")
    as_float = checks.as_images(array.reshape(len(array), *shape), shape, path)
    if np.issubdtype(array.dtype, np.integer):  # Keep integers small: uint8 in memory.
        images = array.reshape(as_float.shape).astype(np.uint8)
        scale = 255.0 if images.max() > 1 else 1.0
    else:
        images, scale = as_float, 1.0
    labels, class_names = None, None
    if "labels" in options:
        labels = _load_labels(options["labels"], len(images), path)
        class_names = tuple(str(i) for i in range(int(labels.max()) + 1))
    return UserData(name, images, labels, class_names, scale,
                    hash_splits([str(i) for i in range(len(images))]))


def _load_labels(path, count, images_path):
    labels = user_files.load_npy(path)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not (np.issubdtype(labels.dtype, np.integer)
                                or labels.dtype == bool):
        raise checks.InputError(
            f"{path} has {labels.dtype} labels of shape {labels.shape}; expected "
            f"integer class ids of shape [{count}], one per image of {images_path}.")
    if len(labels) != count:
        raise checks.InputError(
            f"{path} has {len(labels):,} labels but {images_path} has {count:,} images; "
            "give one label per image.")
    if labels.min() < 0:
        raise checks.InputError(f"{path} has a negative label ({labels.min()}); class "
                                "ids must be 0, 1, 2, ...")
    return labels.astype(np.int64)
