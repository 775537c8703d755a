"""folder: and npy: datasets on small generated files: labels, splits, shapes, errors."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfvae import checks, data, train, user_data
from pattern_data import save_npy

CLASSES = {"dog": 200, "bird": 40, "cat": 120}  # class -> grey level of its images


def _write_image(path, image):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    encode = tf.io.encode_jpeg if path.endswith((".jpg", ".jpeg")) else tf.io.encode_png
    tf.io.write_file(path, encode(tf.constant(image, tf.uint8)))


def _class_folder(root, per_class=20, shape=(32, 32, 3)):
    """Images of each class filled with its grey level; pixel [0, 0] numbers the file."""
    for name, level in CLASSES.items():
        for i in range(per_class):
            image = np.full(shape, level, np.uint8)
            image[0, 0] = i
            _write_image(os.path.join(root, name, f"{i:03d}.png"), image)
    return str(root)


def _all(name, **kwargs):
    """Every example of split 'all' (or kwargs' split) in a fixed order, as numpy."""
    split = kwargs.pop("split", "all")
    ds = data.load_dataset(name, split, 1000, binarize="none", shuffle=False, **kwargs)
    batches = list(ds)
    if kwargs.get("with_labels"):
        return (np.concatenate([b[0].numpy() for b in batches]),
                np.concatenate([b[1].numpy() for b in batches]))
    return np.concatenate([b.numpy() for b in batches])


def _one_line(error):
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def pets(tmp_path_factory):
    return _class_folder(tmp_path_factory.mktemp("pets"))


def test_class_subfolders_become_labels_in_sorted_order(pets):
    info = data.dataset_info(f"folder:{pets}")
    assert info.image_shape == (32, 32, 3)
    assert info.num_classes == 3 and info.class_names == ("bird", "cat", "dog")
    assert sum(info.num_examples.values()) == 60 and info.pixels == "8-bit"
    images, labels = _all(f"folder:{pets}", with_labels=True)
    assert images.dtype == np.float32 and images.shape == (60, 32, 32, 3)
    assert labels.dtype == np.int64
    levels = np.round(images[:, 1, 1, 0] * 255).astype(int)
    expected = {CLASSES[name]: i for i, name in enumerate(info.class_names)}
    assert [expected[level] for level in levels] == list(labels)
    assert np.bincount(labels).tolist() == [20, 20, 20]


def test_splits_partition_the_files_80_10_10_by_hash_and_slices_work(pets):
    name = f"folder:{pets}"
    info = data.dataset_info(name)
    assert set(info.num_examples) == {"train", "validation", "test"}
    seen = {split: {tuple(im[:2, 0, 0]) for im in (_all(name, split=split) * 255)
                    .round()} for split in ("train", "validation", "test")}
    for split, keys in seen.items():
        assert len(keys) == info.num_examples[split]  # no example twice
    assert sum(len(k) for k in seen.values()) == 60  # and none lost
    assert len(_all(name, split="train[:50%]")) == round(info.num_examples["train"] / 2)
    assert len(_all(name, split="train+validation")) == (
        info.num_examples["train"] + info.num_examples["validation"])
    # Proportions, on 2,000 rows of an array.
    counts = user_data.hash_splits([str(i) for i in range(2000)])
    assert 1520 < len(counts["train"]) < 1680
    assert 150 < len(counts["validation"]) < 250 and 150 < len(counts["test"]) < 250


def test_a_file_keeps_its_split_when_others_are_added(tmp_path):
    before = user_data.hash_splits([f"img{i}.png" for i in range(100)])
    after = user_data.hash_splits([f"img{i}.png" for i in range(150)])
    for split in before:
        assert set(before[split]) == set(after[split]) & set(range(100))
    # The order within a split is by hash, not by name: slices mix the classes.
    assert not np.array_equal(before["train"], np.sort(before["train"]))


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    for split, count in (("train", 6), ("test", 3)):
        for cls in ("a", "b"):
            for i in range(count):
                _write_image(str(tmp_path / split / cls / f"{i}.png"),
                             np.full((8, 8, 1), 10 if cls == "a" else 250, np.uint8))
    name = f"folder:{tmp_path}"
    info = data.dataset_info(name)
    assert info.num_examples == {"train": 12, "test": 6}
    assert info.class_names == ("a", "b")
    images, labels = _all(name, split="test", with_labels=True)
    assert list(labels == (images[:, 0, 0, 0] > 0.5)) == [True] * 6
    with pytest.raises(ValueError) as error:
        data.load_dataset(name, "validation", 4)
    assert "Unknown split 'validation'" in _one_line(error)
    assert "it has train, test" in str(error.value)


def test_a_folder_without_subfolders_has_no_labels(tmp_path):
    for i in range(5):
        _write_image(str(tmp_path / f"{i}.jpg"), np.full((16, 16, 3), 9 * i, np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    info = data.dataset_info(f"folder:{tmp_path}")
    assert info.num_classes is None and info.class_names is None
    assert info.image_shape == (16, 16, 3) and sum(info.num_examples.values()) == 5
    with pytest.raises(ValueError, match="has no labels"):
        data.load_dataset(f"folder:{tmp_path}", "all", 4, with_labels=True)


def test_an_image_of_another_shape_is_named_with_what_to_do(tmp_path):
    root = _class_folder(tmp_path, per_class=2, shape=(12, 12, 1))
    _write_image(os.path.join(root, "cat", "odd.png"), np.zeros((10, 12, 1), np.uint8))
    with pytest.raises(checks.InputError) as error:
        data.dataset_info(f"folder:{root}")
    message = _one_line(error)
    assert message.startswith(f"{root}/cat/odd.png is 10x12x1 but {root}/bird/000.png "
                              "(the first image) is 12x12x1")
    assert f"folder:{root},resize=12x12" in message
    info = data.dataset_info(f"folder:{root},resize=12x12")
    assert info.image_shape == (12, 12, 1) and sum(info.num_examples.values()) == 7
    _write_image(os.path.join(root, "cat", "odd.png"), np.zeros((12, 12, 3), np.uint8))
    with pytest.raises(checks.InputError, match="convert them all to RGB or all to grey"):
        data.dataset_info(f"folder:{root}")


@pytest.mark.parametrize("layout, expected", [
    ("missing", "Image folder {root}/missing does not exist"),
    ("empty", "Image folder {root} holds no PNG or JPEG images"),
    ("broken", "{root}/a/broken.png cannot be read as a PNG or JPEG image (Unknown image "
               "file format"),
    ("loose", "{root}/loose.png lies beside class folders (a); put every image in a"),
    ("option", "Bad option 'size=3'"),
    ("resize", "Bad resize='big'"),
])
def test_bad_folders_fail_in_one_line(tmp_path, layout, expected):
    root = str(tmp_path)
    name = f"folder:{root}"
    (tmp_path / "README.txt").write_text("only text")
    if layout in ("broken", "loose"):
        _write_image(f"{root}/a/good.png", np.zeros((4, 4, 1), np.uint8))
    if layout == "broken":
        (tmp_path / "a" / "broken.png").write_bytes(b"not a png")
    if layout == "loose":
        _write_image(f"{root}/loose.png", np.zeros((4, 4, 1), np.uint8))
    name = {"missing": f"folder:{root}/missing", "option": f"{name},size=3",
            "resize": f"{name},resize=big"}.get(layout, name)
    with pytest.raises(checks.InputError) as error:
        data.dataset_info(name)
    assert expected.format(root=root) in _one_line(error)


def test_a_changed_folder_is_read_again(tmp_path):
    _write_image(str(tmp_path / "0.png"), np.zeros((4, 4, 1), np.uint8))
    assert sum(data.dataset_info(f"folder:{tmp_path}").num_examples.values()) == 1
    _write_image(str(tmp_path / "1.png"), np.zeros((4, 4, 1), np.uint8))
    assert sum(data.dataset_info(f"folder:{tmp_path}").num_examples.values()) == 2


# -- npy ----------------------------------------------------------------------------------

def test_npy_uint8_greyscale_floats_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (30, 6, 5), dtype=np.uint8)
    labels = rng.integers(0, 4, 30)
    name = f"npy:{save_npy(tmp_path, 'grey', grey)},labels={save_npy(tmp_path, 'labels', labels)}"
    info = data.dataset_info(name)
    assert info.image_shape == (6, 5, 1) and sum(info.num_examples.values()) == 30
    assert info.num_classes == 4 and info.class_names == ("0", "1", "2", "3")
    images, got = _all(name, with_labels=True)
    order = [int(np.flatnonzero((grey == np.round(im[..., 0] * 255)).all((1, 2)))[0])
             for im in images]
    np.testing.assert_array_equal(got, labels[order])
    np.testing.assert_allclose(images[..., 0], grey[order] / 255.0, atol=1e-6)

    floats = rng.random((10, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(np.sort(_all(f"npy:{save_npy(tmp_path, 'f', floats)}")
                                       .ravel()), np.sort(floats.ravel()))
    binary = (rng.random((10, 4, 4, 1)) < 0.5).astype(np.int64)
    assert set(np.unique(_all(f"npy:{save_npy(tmp_path, 'b', binary)}"))) == {0.0, 1.0}
    # What the pixels are (the trainer's --likelihood=auto reads it).
    assert info.pixels == "8-bit"
    assert data.dataset_info(f"npy:{save_npy(tmp_path, 'f', floats)}").pixels == "real"
    for array in (binary, binary.astype(np.float32)):
        assert data.dataset_info(f"npy:{save_npy(tmp_path, 'b', array)}").pixels == "binary"


@pytest.mark.parametrize("array, labels, expected", [
    (np.zeros((5, 4)), None, "has shape (5, 4); npy: takes images [N, H, W, C] or"),
    (np.zeros((0, 4, 4)), None, "has shape (0, 4, 4)"),
    (np.full((3, 4, 4), 2.0), None, "has pixel values in [2.0, 2.0]; images must be"),
    (np.full((3, 4, 4), 300), None, "has integer values in [300, 300]; expected 0-255"),
    (np.full((3, 4, 4), np.nan), None, "has NaN (first in image 0)"),
    (np.array([[["a"]]] * 3), None, "has dtype <U1"),
    (np.zeros((3, 4, 4), np.uint8), np.zeros(4, np.int64),
     "has 4 labels but {images} has 3 images; give one label per image"),
    (np.zeros((3, 4, 4), np.uint8), np.zeros(3), "has float64 labels of shape (3,)"),
    (np.zeros((3, 4, 4), np.uint8), np.array([0, -1, 1]), "has a negative label (-1)"),
])
def test_bad_arrays_fail_in_one_line(tmp_path, array, labels, expected):
    images = save_npy(tmp_path, "images", array)
    name = f"npy:{images}"
    if labels is not None:
        name += f",labels={save_npy(tmp_path, 'labels', labels)}"
    with pytest.raises(checks.InputError) as error:
        data.dataset_info(name)
    assert expected.format(images=images) in _one_line(error)


def test_missing_and_unreadable_npy_files(tmp_path):
    with pytest.raises(checks.InputError, match="does not exist"):
        data.dataset_info(f"npy:{tmp_path}/none.npy")
    (tmp_path / "text.npy").write_text("1,2,3\n")
    with pytest.raises(checks.InputError, match="cannot be read as a .npy array"):
        data.dataset_info(f"npy:{tmp_path}/text.npy")
    with pytest.raises(checks.InputError, match="Bad option 'label=y.npy'"):
        data.dataset_info(f"npy:{tmp_path}/text.npy,label=y.npy")


def test_32x32x3_batches_through_every_binarization(pets):
    for binarize in ("static", "dynamic", "none"):
        ds = data.load_dataset(f"folder:{pets}", "train", 8, binarize=binarize,
                               seed=1, drop_remainder=True, repeat=True)
        batch = next(iter(ds)).numpy()
        assert batch.shape == (8, 32, 32, 3) and batch.dtype == np.float32
        assert (set(np.unique(batch)) <= {0.0, 1.0}) == (binarize != "none")
        data.check_images(ds.take(1), (32, 32, 3))


def test_short_names_are_safe_file_names():
    assert data.short_name("fashion_mnist") == "fashion_mnist"
    assert data.short_name("folder:/data/My Photos/,resize=64x64") == "folder_My_Photos"
    assert data.short_name("npy:x/images.npy,labels=x/l.npy") == "npy_images"


# -- the training command line -------------------------------------------------------------

TINY_CONV = ["--encoder=conv", "--decoder=conv", "--encoder_filters=4,8",
             "--decoder_filters=8,4", "--encoder_hidden_units=16",
             "--decoder_hidden_units=16", "--latent_dim=2", "--batch_size=8",
             "--epochs=1", "--binarization=none", "--likelihood=gaussian",
             "--nojit_compile", "--nolog_images", "--verbose=0", "--noexport"]


@pytest.mark.slow
def test_the_trainer_runs_on_a_folder_of_32x32x3_images_and_on_npy(pets, tmp_path):
    metrics = train.run(["tfvae.train", f"--dataset=folder:{pets}", *TINY_CONV,
                         f"--output_dir={tmp_path / 'folder'}"])
    assert np.isfinite(metrics["test"]["elbo"])
    assert metrics["dataset"] == f"folder:{pets}"
    images = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    metrics = train.run(["tfvae.train", f"--dataset=npy:{save_npy(tmp_path, 'x', images)}",
                         *TINY_CONV, "--encoder=mlp", "--decoder=mlp",
                         f"--output_dir={tmp_path / 'npy'}"])
    assert np.isfinite(metrics["test"]["elbo"])


@pytest.mark.slow
def test_an_rgb_folder_trains_on_its_levels_and_reports_bits_per_dim(pets, tmp_path):
    """The discretized likelihood end to end: fit logs, test figures, export and
    tools.evaluate in bits per dimension (-log p / (D ln 2), D = 32 * 32 * 3)."""
    import csv
    import json
    import math
    import subprocess
    import sys

    flags = [flag for flag in TINY_CONV if not flag.startswith(("--likelihood",
                                                                "--noexport"))]
    run = tmp_path / "run"
    # No --likelihood: a folder of 8-bit images, not binarized, gets the discretized one.
    metrics = train.run(["tfvae.train", f"--dataset=folder:{pets}", *flags,
                         "--likelihood_components=2",
                         f"--output_dir={run}", f"--export_dir={tmp_path / 'models'}"])
    with open(run / "config.json", encoding="utf-8") as f:
        assert json.load(f)["likelihood"] == "discretized_logistic"
    with open(run / "metrics.json", encoding="utf-8") as f:  # for tools.export of the run
        assert json.load(f)["class_names"] == ["bird", "cat", "dog"]
    test = metrics["test"]
    assert test["bits_per_dim"] == pytest.approx(-test["elbo"] / (3072 * math.log(2.0)),
                                                 rel=1e-4)
    with open(run / "history.csv", encoding="utf-8") as f:
        row = next(csv.DictReader(f))
    assert float(row["bits_per_dim"]) > 0 and float(row["val_bits_per_dim"]) > 0
    with open(os.path.join(metrics["export"]["metadata"]), encoding="utf-8") as f:
        info = json.load(f)
    assert (info["likelihood"], info["num_dims"]) == ("discretized_logistic", 3072)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", str(run), "--num_samples=5",
         "--nojit_compile", "--verbose=0", f"--output={tmp_path / 'report.json'}"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "nll_bits_per_dim" in result.stdout and "log-probabilities" in result.stdout
    with open(tmp_path / "report.json", encoding="utf-8") as f:
        report = json.load(f)
    assert report["nll_bits_per_dim"] == pytest.approx(
        report["nll"] / (3072 * math.log(2.0)))
    assert 0 < report["nll_bits_per_dim"] < 12


def test_the_trainer_reports_bad_user_data_in_one_line(tmp_path):
    _write_image(str(tmp_path / "mixed" / "0.png"), np.zeros((8, 8, 1), np.uint8))
    _write_image(str(tmp_path / "mixed" / "1.png"), np.zeros((9, 8, 1), np.uint8))
    images = save_npy(tmp_path, "x", np.zeros((4, 8, 8), np.uint8))
    labels = save_npy(tmp_path, "y", np.zeros(5, np.int64))
    for dataset, expected in (
            (f"folder:{tmp_path}/none", "does not exist"),
            (f"folder:{tmp_path}/mixed", "1.png is 9x8x1 but"),
            (f"npy:{images},labels={labels}", "has 5 labels but")):
        with pytest.raises(SystemExit) as exit_info:
            train.run(["tfvae.train", f"--dataset={dataset}", *TINY_CONV,
                       f"--output_dir={tmp_path / 'run'}"])
        message = str(exit_info.value.code)
        assert message.startswith("tfvae.train: error: ") and "\n" not in message
        assert expected in message


def test_rgba_and_grey_alpha_folders_train_and_the_run_ends_whole(tmp_path):
    """RGBA PNGs trained, then the projector's sprite refused 4 channels in a traceback
    and metrics.json was never written. The alpha channel is dropped on reading."""
    rng = np.random.default_rng(0)
    for i in range(40):
        _write_image(str(tmp_path / "rgba" / f"{i:03d}.png"),
                     rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
        _write_image(str(tmp_path / "grey_alpha" / f"{i:03d}.png"),
                     rng.integers(0, 256, (8, 8, 2), dtype=np.uint8))
    rgba = f"folder:{tmp_path / 'rgba'}"
    assert data.dataset_info(rgba).image_shape == (8, 8, 3)
    assert data.dataset_info(f"folder:{tmp_path / 'grey_alpha'}").image_shape == (8, 8, 1)
    files = {tf.io.decode_png(tf.io.read_file(str(path))).numpy()[..., :3].tobytes()
             for path in (tmp_path / "rgba").iterdir()}
    read = {np.round(image * 255).astype(np.uint8).tobytes() for image in _all(rgba)}
    assert read == files  # RGB as in the files, alpha dropped
    run = tmp_path / "run"
    metrics = train.run(["tfvae.train", f"--dataset={rgba}", *TINY_CONV,
                         "--encoder=mlp", "--decoder=mlp", "--log_images",
                         f"--output_dir={run}"])
    assert np.isfinite(metrics["test"]["elbo"]) and "extra_errors" not in metrics
    assert os.path.isfile(run / "metrics.json")


def test_npy_images_of_other_than_1_or_3_channels_are_refused(tmp_path):
    images = save_npy(tmp_path, "rgba", np.zeros((4, 8, 8, 4), np.uint8))
    with pytest.raises(checks.InputError) as error:
        data.dataset_info(f"npy:{images}")
    assert "4 channels; npy: takes greyscale (1) or RGB (3)" in _one_line(error)


@pytest.mark.slow
def test_a_failing_projector_is_a_warning_and_metrics_json_is_written(
        pets, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("Expected images [N, H, W, 1 or 3], got shape (3, 8, 8, 4).")

    monkeypatch.setattr(train.projector, "write_projector", broken)
    metrics = train.run(["tfvae.train", f"--dataset=folder:{pets}", *TINY_CONV,
                         f"--output_dir={tmp_path}"])
    assert np.isfinite(metrics["test"]["elbo"])
    assert metrics["extra_errors"] == {"projector": "ValueError: Expected images [N, H, "
                                                    "W, 1 or 3], got shape (3, 8, 8, 4)."}
    import json
    with open(tmp_path / "metrics.json") as f:
        assert json.load(f)["extra_errors"] == metrics["extra_errors"]

