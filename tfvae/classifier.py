"""Small convolutional classifiers: the one definition, its training, the shipped ones.

    build, "small": 3x3 conv (32) -> 2x2 max-pool -> 3x3 conv (64) -> max-pool ->
           flatten -> dropout 0.3 -> dense 128 + ReLU ("features") -> dense K (logits)
    build, "wide": random shifts of up to 2 pixels and left-right flips (training
           only) -> [3x3 conv + batch norm + ReLU, twice; max-pool] with 32, then 64
           channels -> flatten -> dropout 0.4 -> dense 128 ("features") -> dense K.
           4x the small one's training time here for half a point of accuracy
           (91.04% against 90.52% on grey Fashion-MNIST), but a stricter judge of
           samples (`tools.label_consistency`; configs/README.md).

`tools.label_consistency` trains it on a labelled dataset; `tfvae.sample_quality`
reads images through its "features" layer (the penultimate one) for KID and FID, and
trains fresh copies of it for the Classification Accuracy Score.

Shipped as package data (`tfvae/classifiers/<name>.keras`, with `<name>.json`
recording how it was trained and its test accuracy), retrained by
`python -m tools.train_classifier --dataset=<name>` (seeded, deterministic ops):

* `fashion_mnist`: the 10 labelled classes, trained on dynamically binarized training
  images (a fresh Bernoulli draw of every grey level each epoch), tested on the
  statically binarized test split (seed 0), the images `configs/fashion_mnist_cvae.cfg`
  trains and tests on.
* `fashion_mnist_grey`: the same classes, trained and tested on the 8-bit grey levels
  (`--grey_levels`), which `configs/fashion_mnist_deep.cfg` models.
* `fashion_mnist_grey_wide`: the "wide" network on the grey levels
  (`--grey_levels --architecture=wide`), which judges the label consistency of the
  conditional models' samples. FID and KID keep the small one's features, so their
  figures stay comparable with those recorded before it.
* `binarized_mnist`: that dataset has no labels and no labelled MNIST can be had
  offline here, so the classes are pseudo-labels: k-means (`kmeans`, K = 10, k-means++
  seeding, Lloyd iterations) of the binary training images in pixel space; the test
  images are labelled by their nearest centroid, and the recorded "test accuracy" is
  the agreement with that, not digit accuracy. The network still has to tell the
  kinds of digit shape apart from binary pixels, which is what its features are for.

Which shipped classifier judges a dataset's images, binary or grey: `for_dataset`
(binary MNIST takes the binarized_mnist one; grey MNIST has none).
"""

import functools
import json
import os

import numpy as np

from tfvae import user_files

DIRECTORY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "classifiers")
FEATURES = "features"
# The shipped classifier that judges images of (a dataset, binary or not).
JUDGES = {("binarized_mnist", True): "binarized_mnist", ("mnist", True): "binarized_mnist",
          ("fashion_mnist", True): "fashion_mnist",
          ("fashion_mnist", False): "fashion_mnist_grey"}


ARCHITECTURES = ("small", "wide")
# The smallest height and width each one reads (its convolutions and poolings leave at
# least one pixel).
SMALLEST_SIDE = {"small": 10, "wide": 4}


def build(image_shape, num_classes, units=128, architecture="small"):
    """The classifier, uncompiled: logits [B, num_classes] of images [B, H, W, C]."""
    import keras

    layers = keras.layers
    smallest = SMALLEST_SIDE.get(architecture, 0)
    if min(image_shape[:2]) < smallest:
        raise ValueError(f"the {architecture} classifier reads images of at least "
                         f"{smallest}x{smallest} pixels; these are "
                         f"{image_shape[0]}x{image_shape[1]}.")
    if architecture == "small":
        body = [layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
                layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(),
                layers.Flatten(), layers.Dropout(0.3)]
    elif architecture == "wide":
        shift = 2 / image_shape[0], 2 / image_shape[1]
        body = [layers.RandomTranslation(*shift, fill_mode="constant"),
                layers.RandomFlip("horizontal")]
        for channels in (32, 64):
            for _ in range(2):
                body += [layers.Conv2D(channels, 3, padding="same", use_bias=False),
                         layers.BatchNormalization(), layers.ReLU()]
            body.append(layers.MaxPooling2D())
        body += [layers.Flatten(), layers.Dropout(0.4)]
    else:
        raise ValueError(f"architecture {architecture!r}: one of {ARCHITECTURES}.")
    return keras.Sequential(
        [keras.Input(tuple(image_shape)), *body,
         layers.Dense(units, activation="relu", name=FEATURES),
         layers.Dense(num_classes)], name="classifier")


def fresh_copy(classifier, seed=0, num_classes=None):
    """The same architecture with new weights drawn with `seed`, uncompiled; with
    `num_classes`, that many outputs from its last layer (a Dense one)."""
    import keras

    keras.utils.set_random_seed(seed)
    return _uncompiled(classifier, num_classes)


def _uncompiled(classifier, num_classes=None):
    """A new model of `classifier`'s architecture, fresh weights, no optimizer (Keras's
    clone_model and model_from_json carry the compile state over)."""
    config = classifier.get_config()
    if num_classes:
        config["layers"][-1]["config"]["units"] = int(num_classes)
    return type(classifier).from_config(config)


def train(classifier, dataset, epochs, seed=0, verbose=0):
    """Fits `classifier` in place with Adam and the cross-entropy of its logits (seeds
    Keras with `seed` first: dropout and shuffles; seed it before `build` too for
    reproducible initial weights).

    dataset: a `tf.data.Dataset` of (images, class ids) batches, or a pair of arrays
    (images [N, H, W, C], labels [N]) shuffled each epoch with `seed`."""
    import keras

    keras.utils.set_random_seed(seed)
    if isinstance(dataset, tuple):
        dataset = array_batches(*dataset, shuffle_seed=seed)
    classifier.compile(optimizer="adam", metrics=["accuracy"],
                       loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    classifier.fit(dataset, epochs=epochs, verbose=verbose, shuffle=False)  # ds shuffles
    return classifier


def array_batches(images, labels, batch_size=128, shuffle_seed=None):
    """A `tf.data.Dataset` of (images, labels) batches of arrays, reshuffled each
    epoch when `shuffle_seed` is given."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((np.asarray(images, np.float32),
                                             np.asarray(labels, np.int64)))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(images), seed=shuffle_seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def predict(classifier, images, batch_size=500):
    """Class ids [N] that `classifier` gives images [N, H, W, C]."""
    logits = classifier.predict(np.asarray(images, np.float32), batch_size=batch_size,
                                verbose=0)
    return np.argmax(logits, axis=-1)


def accuracy(classifier, images, labels, batch_size=500):
    """The fraction of images classified as their labels."""
    return float(np.mean(predict(classifier, images, batch_size) == np.asarray(labels)))


def features(classifier, images, batch_size=500):
    """float64 [N, F]: the activations of the penultimate layer (the "features"
    layer; the one before the logits for a classifier built elsewhere)."""
    return _extractor(classifier).predict(np.asarray(images, np.float32),
                                          batch_size=batch_size,
                                          verbose=0).astype(np.float64)


@functools.lru_cache(maxsize=4)  # one per classifier: repeated calls do not retrace
def _extractor(classifier):
    import keras

    try:
        layer = classifier.get_layer(FEATURES)
    except ValueError:
        layer = classifier.layers[-2]
    return keras.Model(classifier.inputs, layer.output)


def save(classifier, path):
    """Writes the classifier's architecture and weights to `path` (.keras), without
    optimizer state (a third of the size)."""
    bare = _uncompiled(classifier)
    bare.set_weights(classifier.get_weights())
    user_files.save_model_whole(bare, path)


def load(path):
    """The classifier in the .keras file `path`; a one-line ValueError if there is none."""
    import zipfile

    import keras

    if not os.path.isfile(path):
        raise ValueError(f"{path} does not exist; give a .keras classifier.")
    try:
        classifier = keras.saving.load_model(path, compile=False)
    except (ValueError, OSError, TypeError, KeyError, zipfile.BadZipFile) as error:
        line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path} cannot be read as a .keras classifier ({line}).") \
            from None
    if len(classifier.layers) < 2 or len(classifier.outputs) != 1:
        raise ValueError(f"{path} is not a classifier of images: it needs a features "
                         "layer before its logits.")
    return classifier


def check_fits(judge, image_shape, name, num_classes=None):
    """ValueError unless the classifier `judge` (called `name`) takes images of
    `image_shape` and, given `num_classes`, tells that many classes apart."""
    takes = tuple(judge.input_shape[1:])
    if takes != tuple(image_shape):
        raise ValueError(f"{name} takes images of {takes}, the model makes "
                         f"{tuple(image_shape)}.")
    if num_classes and judge.output_shape[-1] != num_classes:
        raise ValueError(f"{name} tells {judge.output_shape[-1]} classes apart, the "
                         f"model has {num_classes}.")


def shipped_path(name):
    """The path of the shipped classifier `name` (a key of `JUDGES`' values)."""
    return os.path.join(DIRECTORY, f"{name}.keras")


def for_dataset(dataset, binary=True):
    """(classifier, its record) that judge `binary` (or grey-level) images of
    `dataset`; ValueError when tfvae ships none for them."""
    name = JUDGES.get((dataset, bool(binary)))
    if name is None:
        raise ValueError(f"tfvae ships no classifier for {'binary' if binary else 'grey'}"
                         f" images of {dataset}; train one (tfvae.classifier.build and "
                         "train) and pass it as --quality_classifier=FILE.keras.")
    with open(os.path.join(DIRECTORY, f"{name}.json"), encoding="utf-8") as f:
        record = json.load(f)
    return load(shipped_path(name)), record


def kmeans(points, k, seed=0, iterations=30):
    """(labels [N], centroids [k, D]) of Lloyd's k-means on points [N, D], seeded by
    k-means++ (Arthur & Vassilvitskii 2007) with `seed`; squared Euclidean distance."""
    points = np.asarray(points, np.float64).reshape(len(points), -1)
    rng = np.random.default_rng(seed)
    centroids = points[[rng.integers(len(points))]]
    closest = _squared_distances(points, centroids).min(axis=1)
    for _ in range(1, k):  # each new centroid drawn in proportion to D(x)^2
        chosen = rng.choice(len(points), p=closest / closest.sum())
        centroids = np.vstack([centroids, points[chosen]])
        closest = np.minimum(closest, _squared_distances(points, points[[chosen]])[:, 0])
    for _ in range(iterations):
        labels = nearest(points, centroids)
        moved = np.array([points[labels == c].mean(axis=0) if np.any(labels == c)
                          else centroids[c] for c in range(k)])
        if np.allclose(moved, centroids):
            break
        centroids = moved
    return nearest(points, centroids), centroids


def nearest(points, centroids):
    """The index of the nearest centroid [N] of each of points [N, ...]."""
    points = np.asarray(points, np.float64).reshape(len(points), -1)
    return np.argmin(_squared_distances(points, centroids), axis=1)


def _squared_distances(points, centroids):
    return ((points**2).sum(1)[:, None] - 2 * points @ centroids.T
            + (centroids**2).sum(1)[None, :])
