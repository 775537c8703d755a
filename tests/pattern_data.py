"""Generated data for the tests.

* `binary_images`: independent random pixels, the input of most small model tests.
* `save_npy`: an array as a .npy file, as the command lines read them.
* `pattern_images` served through `tfds.testing.mock_data` (`generated_data`): random
  mock bytes cannot be learned, so a wrong training step would not show in the loss;
  these 4 patterns with 2% flipped pixels can. Shared by the multi-worker and
  fault-tolerance tests, which also run as worker scripts (this folder is on sys.path).
"""

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds


def binary_images(count, shape=(8, 8, 1), seed=0, on=0.3):
    """float32 [count, *shape] in {0, 1}: each pixel 1 with probability `on`."""
    rng = np.random.default_rng(seed)
    return (rng.random((count, *shape)) < on).astype(np.float32)


def save_npy(directory, name, array):
    """The path of `array` saved as directory/name.npy."""
    path = str(directory / f"{name}.npy")
    np.save(path, array)
    return path


def pattern_images(num_examples, seed=0):
    """uint8 [N, 28, 28, 1] in {0, 255}: 4 random patterns (25% on), 2% pixels flipped."""
    rng = np.random.default_rng(seed)
    patterns = rng.random((4, 28, 28, 1)) < 0.25
    flips = rng.random((num_examples, 28, 28, 1)) < 0.02
    return ((patterns[np.arange(num_examples) % 4] ^ flips) * 255).astype(np.uint8)


def generated_data(num_examples):
    """Context manager: every split of every TFDS dataset holds the pattern images."""
    images = pattern_images(num_examples)

    def as_dataset(builder, split, **kwargs):
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": np.zeros(len(images), np.int64)})

    return tfds.testing.mock_data(as_dataset_fn=as_dataset)
