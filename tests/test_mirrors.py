"""Re-gzipped source files: checked by their contents, restored byte for byte.

The synthetic tests run anywhere; the Fashion-MNIST ones use Debian's
dataset-fashion-mnist under /usr/share/datasets/fashion-mnist and skip without it.
"""

import gzip
import os
import struct
import zlib

import numpy as np
import pytest
import tensorflow_datasets as tfds

from tfvae import data, mirrors

DEBIAN_DIR = "/usr/share/datasets/fashion-mnist"
needs_debian_files = pytest.mark.skipif(
    not os.path.isdir(DEBIAN_DIR),
    reason=f"{DEBIAN_DIR} not found: apt-get install dataset-fashion-mnist "
           "(.ci/run does) to test Fashion-MNIST offline")


def _gzip(raw, name=None, mtime=0, level=6):
    """A one-member gzip file with the given header fields (OS 3, like GNU gzip)."""
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    body = deflate.compress(raw) + deflate.flush()
    header = b"\x1f\x8b\x08" + bytes([8 if name else 0]) + struct.pack("<I", mtime)
    header += b"\x00\x03" + (name.encode() + b"\0" if name else b"")
    return header + body + struct.pack("<II", zlib.crc32(raw), len(raw))


def _idx_images(count=20, size=28, seed=0):
    """An IDX image file; few grey levels, so that compression levels differ."""
    levels = np.random.default_rng(seed).integers(0, 4, (count, size, size))
    pixels = (levels * 60).astype(np.uint8)
    return struct.pack(">IIII", 2051, count, size, size) + pixels.tobytes()


RAW = _idx_images()
ORIGINAL = _gzip(RAW, "tiny-images-idx3-ubyte", mtime=1504176627)
KNOWN = {"tiny-images-idx3-ubyte.gz": mirrors.Original(
    len(RAW), mirrors.sha256(RAW), "tiny-images-idx3-ubyte", 1504176627)}
REGISTERED = {"tiny-images-idx3-ubyte.gz": mirrors.sha256(ORIGINAL),
              "other.gz": "0" * 64}


def test_a_re_gzipped_file_is_the_original_with_another_header():
    debian_style = _gzip(RAW, mtime=1591347949)  # no name, another time
    assert gzip.decompress(debian_style) == RAW
    assert len(ORIGINAL) - len(debian_style) == len("tiny-images-idx3-ubyte") + 1
    assert mirrors.gzip_parts(debian_style)[1] == mirrors.gzip_parts(ORIGINAL)[1]
    assert mirrors.restore(debian_style, KNOWN["tiny-images-idx3-ubyte.gz"]) == ORIGINAL


def _manual_dir(tmp_path, content):
    manual = tmp_path / "manual"
    manual.mkdir()
    (manual / "tiny-images-idx3-ubyte.gz").write_bytes(content)
    (manual / "other.gz").write_bytes(b"left to TFDS")
    return str(manual)


def test_the_manual_dir_gets_restored_files_and_links_to_the_rest(tmp_path):
    manual = _manual_dir(tmp_path, _gzip(RAW, mtime=5))
    staging = str(tmp_path / "staging")
    assert mirrors.manual_dir_for("tiny", manual, REGISTERED, staging, KNOWN) == staging
    with open(os.path.join(staging, "tiny-images-idx3-ubyte.gz"), "rb") as f:
        assert f.read() == ORIGINAL
    assert os.path.realpath(os.path.join(staging, "other.gz")) == os.path.join(
        manual, "other.gz")


def test_original_files_and_unknown_datasets_are_passed_through(tmp_path):
    manual = _manual_dir(tmp_path, ORIGINAL)
    staging = str(tmp_path / "staging")
    assert mirrors.manual_dir_for("tiny", manual, REGISTERED, staging, KNOWN) == manual
    assert mirrors.manual_dir_for("mnist", manual, REGISTERED, staging) == manual
    assert not os.path.exists(staging)


@pytest.mark.parametrize("content, expected", [
    (_gzip(_idx_images(seed=1)), "is not the original tiny-images-idx3-ubyte: "
                                 f"decompressed it has {len(RAW):,} bytes with SHA-256"),
    (_gzip(RAW, level=1), "holds the original contents (decompressed SHA-256 checked) "
                          "but was recompressed"),
    (RAW, "is not a gzip file"),
    (ORIGINAL[:40] + ORIGINAL[60:], "is a damaged gzip file"),
    (ORIGINAL[:-3], "is cut short, damaged or holds several gzip members"),
], ids=["other_images", "other_level", "not_gzip", "damaged", "cut_short"])
def test_other_contents_or_compression_fail_in_one_line(tmp_path, content, expected):
    manual = _manual_dir(tmp_path, content)
    with pytest.raises(mirrors.MirrorError) as error:
        mirrors.manual_dir_for("tiny", manual, REGISTERED, str(tmp_path / "s"), KNOWN)
    message = str(error.value)
    assert "\n" not in message and expected in message
    assert message.startswith(os.path.join(manual, "tiny-images-idx3-ubyte.gz"))


# -- the real files -------------------------------------------------------------------


def _registered_fashion_mnist():
    infos = tfds.builder("fashion_mnist").url_infos
    return {info.filename: info.checksum for info in infos.values()}


@needs_debian_files
def test_debian_fashion_mnist_restores_to_the_files_tfds_registers(tmp_path):
    registered = _registered_fashion_mnist()
    assert set(registered) == set(mirrors.RESTORABLE["fashion_mnist"])
    staging = mirrors.manual_dir_for("fashion_mnist", DEBIAN_DIR, registered,
                                     str(tmp_path))
    for filename, checksum in registered.items():
        with open(os.path.join(staging, filename), "rb") as f:
            assert mirrors.sha256(f.read()) == checksum, filename


def _idx(path):
    raw = gzip.open(path).read()
    magic, count = struct.unpack(">II", raw[:8])
    offset = 16 if magic == 2051 else 8
    return np.frombuffer(raw, np.uint8, offset=offset).reshape(count, -1)


@needs_debian_files
@pytest.mark.slow
def test_fashion_mnist_prepares_offline_from_the_debian_files(tmp_path):
    """About a minute: TFDS prepares all 70,000 images into a fresh data_dir."""
    info = data.dataset_info("fashion_mnist", data_dir=str(tmp_path),
                             manual_dir=DEBIAN_DIR)
    assert info.image_shape == (28, 28, 1)
    assert info.num_examples == {"train": 60000, "test": 10000}
    assert info.num_classes == 10 and info.class_names[9] == "Ankle boot"
    ds = data.load_dataset("fashion_mnist", "test", 10000, binarize=None,
                           data_dir=str(tmp_path), shuffle=False, with_labels=True)
    images, labels = (t.numpy() for t in next(iter(ds)))
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.float32
    # The same images and labels as the IDX files (TFDS stores them in another order).
    want_images = _idx(os.path.join(DEBIAN_DIR, "t10k-images-idx3-ubyte.gz"))
    want_labels = _idx(os.path.join(DEBIAN_DIR, "t10k-labels-idx1-ubyte.gz"))[:, 0]
    got = np.round(images.reshape(10000, -1) * 255).astype(np.int64)
    got, want = np.c_[got, labels], np.c_[want_images, want_labels].astype(np.int64)
    np.testing.assert_array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
