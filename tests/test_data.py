"""tfvae.data on tfds.testing.mock_data: values, shapes, binarization, errors."""

import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from tfvae import data


def _epoch(ds):
    return np.concatenate([batch.numpy() for batch in ds])


def test_binarized_mnist_batches_are_binary_float32():
    # max_value=2: the mock's random bytes are 0 or 1, like the real dataset.
    with tfds.testing.mock_data(num_examples=40, max_value=2):
        info = data.dataset_info("binarized_mnist")
        assert info.image_shape == (28, 28, 1) and info.pixels == "binary"
        assert data.dataset_info("fashion_mnist").pixels == "8-bit"
        ds = data.load_dataset("binarized_mnist", "train", 16, seed=0)
        batches = [b.numpy() for b in ds]
    assert [b.shape for b in batches] == [(16, 28, 28, 1)] * 2 + [(8, 28, 28, 1)]
    assert all(b.dtype == np.float32 for b in batches)
    values = np.unique(np.concatenate(batches))
    assert set(values) == {0.0, 1.0}


def test_dynamic_binarization_redraws_each_epoch_and_repeats_with_the_seed():
    with tfds.testing.mock_data(num_examples=32):
        ds = data.load_dataset("mnist", "train", 8, binarize="dynamic", seed=3,
                               shuffle=False)
        first, second = _epoch(ds), _epoch(ds)
        rerun = _epoch(data.load_dataset("mnist", "train", 8, binarize="dynamic",
                                         seed=3, shuffle=False))
        grey = _epoch(data.load_dataset("mnist", "train", 8, binarize=None,
                                        shuffle=False))
    assert set(np.unique(first)) == {0.0, 1.0}
    # About half the pixels of uniform grey levels flip between two draws.
    assert 0.25 < np.mean(first != second) < 0.5
    np.testing.assert_array_equal(first, rerun)
    # Each draw is Bernoulli(grey): the mean over pixels matches the grey mean.
    assert abs(first.mean() - grey.mean()) < 0.01


def test_static_binarization_is_fixed_and_grey_levels_stay_in_unit_interval():
    with tfds.testing.mock_data(num_examples=32):
        ds = data.load_dataset("mnist", "train", 8, binarize="static", seed=1,
                               shuffle=False)
        first, second = _epoch(ds), _epoch(ds)
        grey = _epoch(data.load_dataset("mnist", "test", 8, binarize="none",
                                        shuffle=False))
    np.testing.assert_array_equal(first, second)
    assert set(np.unique(first)) == {0.0, 1.0}
    assert grey.dtype == np.float32 and 0.0 <= grey.min() and grey.max() <= 1.0
    assert len(np.unique(grey)) > 100  # Grey levels, not binarized.


def test_shuffle_changes_order_per_epoch_but_not_content():
    with tfds.testing.mock_data(num_examples=32):
        ds = data.load_dataset("mnist", "train", 32, binarize=None, seed=0)
        first, second = _epoch(ds), _epoch(ds)
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(np.sort(first.reshape(32, -1), axis=0),
                                  np.sort(second.reshape(32, -1), axis=0))


def test_labels_repeat_and_drop_remainder():
    with tfds.testing.mock_data(num_examples=20):
        images, labels = next(iter(data.load_dataset(
            "mnist", "train", 8, with_labels=True, shuffle=False)))
        ds = data.load_dataset("mnist", "train", 8, repeat=True, drop_remainder=True)
        shapes = [b.shape[0] for b in ds.take(5)]
        with pytest.raises(ValueError, match="has no labels"):
            data.load_dataset("binarized_mnist", "train", 8, with_labels=True)
    assert images.shape == (8, 28, 28, 1) and labels.dtype == tf.int64
    assert shapes == [8] * 5


def test_unknown_dataset_lists_supported_ones():
    with pytest.raises(ValueError) as error:
        data.load_dataset("no_such_dataset", "train", 8)
    message = str(error.value)
    assert "\n" not in message
    assert "'no_such_dataset'" in message
    assert "binarized_mnist, mnist, fashion_mnist" in message


def test_missing_manual_files_say_what_to_put_where(tmp_path):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "binarized_mnist_train.amat").write_text("")
    with pytest.raises(data.DataUnavailableError) as error:
        data.dataset_info("binarized_mnist", data_dir=str(tmp_path / "tfds"),
                          manual_dir=str(manual))
    message = str(error.value)
    assert "\n" not in message
    assert "binarized_mnist_test.amat, binarized_mnist_valid.amat not found" in message
    for name in ("test", "train", "valid"):
        assert f"binarized_mnist_{name}.amat" in message
    assert "--tfds_manual_dir" in message


@pytest.mark.parametrize("damage", ["cut", "flipped"])
def test_a_damaged_manual_file_is_named_with_what_to_do(damage, tmp_path):
    """A cut-short .amat was reported as TFDS's "has wrong checksum:" with the advice
    to pass the --tfds_manual_dir that was passed."""
    shared = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                          "binarized_mnist")
    if not os.path.isdir(shared):
        pytest.skip("no copy of binarized_mnist's .amat files")
    manual = tmp_path / "manual"
    manual.mkdir()
    for name in ("train", "valid"):
        os.symlink(os.path.abspath(f"{shared}/binarized_mnist_{name}.amat"),
                   manual / f"binarized_mnist_{name}.amat")
    content = bytearray(open(f"{shared}/binarized_mnist_test.amat", "rb").read())
    if damage == "cut":
        content = content[:len(content) // 2]
    else:
        content[1000] ^= 1  # "0" <-> "1": the same size
    (manual / "binarized_mnist_test.amat").write_bytes(content)
    with pytest.raises(data.DataUnavailableError) as error:
        data.dataset_info("binarized_mnist", data_dir=str(tmp_path / "tfds"),
                          manual_dir=str(manual))
    message = str(error.value)
    assert message.startswith(f"{manual}/binarized_mnist_test.amat is damaged (")
    assert message.endswith("replace it with a good copy of the file.")
    assert ("cut short: 7,840,000 bytes, TFDS registers 15,680,000" if damage == "cut"
            else "its SHA-256 is not the one TFDS registers") in message
    assert "\n" not in message and "--tfds_manual_dir" not in message


def test_bad_binarization_and_batch_size():
    with pytest.raises(ValueError, match="Unknown binarization 'soft'"):
        data.load_dataset("mnist", "train", 8, binarize="soft")
    with pytest.raises(ValueError, match="batch_size must be a positive"):
        data.load_dataset("mnist", "train", 0)


@pytest.mark.parametrize("images, message", [
    (np.zeros((4, 32, 32, 3), np.float32), r"shape \(None, 32, 32, 3\)"),
    (np.zeros((4, 28, 28, 1), np.uint8), "uint8 images"),
    (np.full((4, 28, 28, 1), 255.0, np.float32), r"pixel values in \[255.0, 255.0\]"),
    (np.zeros((0, 28, 28, 1), np.float32), "is empty"),
])
def test_check_images_rejects_what_the_model_cannot_take(images, message):
    ds = tf.data.Dataset.from_tensor_slices(images).batch(2)
    with pytest.raises(ValueError, match=message):
        data.check_images(ds, (28, 28, 1), "the split")


def test_check_images_returns_the_first_batch():
    images = np.random.default_rng(0).random((5, 28, 28, 1)).astype(np.float32)
    batch = data.check_images(tf.data.Dataset.from_tensor_slices(images).batch(4),
                              (28, 28, 1))
    np.testing.assert_array_equal(batch, images[:4])
