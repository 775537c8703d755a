"""Source files that a mirror re-packed: check their contents, restore the originals.

TFDS checks every source file against the SHA-256 of the bytes it registered for the
download URL. A mirror that re-gzips a file keeps its contents but changes those bytes,
and TFDS then stops with "has wrong checksum". For the files listed in `RESTORABLE`
this module checks the *decompressed* contents against the size and SHA-256 recorded
below and rebuilds the original .gz, so that TFDS's own check passes on exact bytes:
checksum validation is never switched off.

Debian's `dataset-fashion-mnist` (0.0~git20200523.55506a9-1, files under
/usr/share/datasets/fashion-mnist/) is such a mirror. Compared with the files TFDS
registers, only the 10-byte gzip header and the file name after it differ:

    original (TFDS): FLG=FNAME, MTIME 2017-08-31 10:50:27 UTC (train-*: 10:50:06),
                     XFL 0, OS 3 (Unix), then the name, e.g. "t10k-images-idx3-ubyte\\0"
    Debian:          FLG=0 (no name), MTIME 2020-06-05 09:05:49 UTC, XFL 0, OS 3

The deflate streams, CRC-32s and lengths are byte-identical, which is why each Debian
file is shorter by exactly the length of the name plus its NUL (4,422,079 against
4,422,102 bytes for t10k-images). Putting back the original header reproduces all
four registered SHA-256 sums. The decompressed contents are the IDX files: 60,000
training and 10,000 test images of 28 x 28 (magic 2051) and as many labels (magic
2049); their sizes and SHA-256 sums are recorded in `RESTORABLE`.
"""

import collections
import hashlib
import os
import struct
import zlib

Original = collections.namedtuple(
    "Original", ["size", "sha256", "gzip_name", "gzip_mtime"])
Original.__doc__ = """An original source file, as its mirror must still contain it.

    size, sha256: of the decompressed contents.
    gzip_name, gzip_mtime: the FNAME and MTIME fields of the original gzip header
    (XFL 0 and OS 3 are taken as given).
"""

_FASHION_MNIST_MTIME = 1504176627  # 2017-08-31 10:50:27 UTC
RESTORABLE = {
    "fashion_mnist": {
        "t10k-images-idx3-ubyte.gz": Original(
            7_840_016,
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-images-idx3-ubyte", _FASHION_MNIST_MTIME),
        "t10k-labels-idx1-ubyte.gz": Original(
            10_008,
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            "t10k-labels-idx1-ubyte", _FASHION_MNIST_MTIME),
        "train-images-idx3-ubyte.gz": Original(
            47_040_016,
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-images-idx3-ubyte", _FASHION_MNIST_MTIME - 21),
        "train-labels-idx1-ubyte.gz": Original(
            60_008,
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "train-labels-idx1-ubyte", _FASHION_MNIST_MTIME - 21),
    },
}

_FEXTRA, _FNAME, _FCOMMENT, _FHCRC = 4, 8, 16, 2


class MirrorError(ValueError):
    """A source file is not the original, or cannot be restored; one line."""


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def gzip_parts(data, what="the file"):
    """(header, deflate stream, trailer) of a one-member gzip file (RFC 1952)."""
    if len(data) < 18 or data[:3] != b"\x1f\x8b\x08":
        raise MirrorError(f"{what} is not a gzip file.")
    flags, end = data[3], 10
    try:
        if flags & _FEXTRA:
            end += 2 + struct.unpack("<H", data[end:end + 2])[0]
        for flag in (_FNAME, _FCOMMENT):
            if flags & flag:
                end = data.index(b"\0", end) + 1
        if flags & _FHCRC:
            end += 2
    except (ValueError, struct.error):
        raise MirrorError(f"{what} has a broken gzip header.") from None
    return data[:end], data[end:-8], data[-8:]


def contents(data, what="the file"):
    """The decompressed contents of a one-member gzip file, after checking its CRC."""
    _, body, trailer = gzip_parts(data, what)
    inflate = zlib.decompressobj(-zlib.MAX_WBITS)
    try:
        raw = inflate.decompress(body) + inflate.flush()
    except zlib.error as error:
        raise MirrorError(f"{what} is a damaged gzip file ({error}).") from None
    crc, size = struct.unpack("<II", trailer)
    if not inflate.eof or inflate.unused_data or crc != zlib.crc32(raw) or (
            size != len(raw) & 0xFFFFFFFF):
        raise MirrorError(f"{what} is cut short, damaged or holds several gzip members.")
    return raw


def check_contents(data, original, what="the file"):
    """MirrorError unless the decompressed `data` is `original` (size and SHA-256)."""
    raw = contents(data, what)
    if len(raw) != original.size or sha256(raw) != original.sha256:
        raise MirrorError(
            f"{what} is not the original {original.gzip_name}: decompressed it has "
            f"{len(raw):,} bytes with SHA-256 {sha256(raw)[:16]}..., the original "
            f"{original.size:,} bytes with {original.sha256[:16]}...; download it again "
            "or reinstall the package that installed it.")


def restore(data, original, what="the file"):
    """The bytes of the original .gz: `data`'s deflate stream under the original header.

    Checks the decompressed contents first (`check_contents`).
    """
    check_contents(data, original, what)
    _, body, trailer = gzip_parts(data, what)
    header = (b"\x1f\x8b\x08" + bytes([_FNAME]) + struct.pack("<I", original.gzip_mtime)
              + b"\x00\x03" + original.gzip_name.encode("latin-1") + b"\0")
    return header + body + trailer


def manual_dir_for(dataset, manual_dir, registered, staging_dir, known=None):
    """The directory to hand TFDS as `manual_dir` for `dataset`.

    `manual_dir` itself when every file in it that `known` (default `RESTORABLE`)
    lists for `dataset` has the SHA-256 in `registered` ({file name: sha256}, TFDS's);
    otherwise `staging_dir`, holding the restored originals and links to the files
    that needed nothing. Files TFDS registers but `known` does not list are left to
    TFDS's own check.

    Raises MirrorError when a file's decompressed contents are not the original's, or
    when they are but it was recompressed (a new deflate stream, not only a new
    header), so that the registered bytes cannot be rebuilt.
    """
    known = RESTORABLE.get(dataset, {}) if known is None else known
    restored = {}
    for filename, checksum in sorted(registered.items()):
        path = os.path.join(manual_dir, filename)
        if filename not in known or not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        if sha256(data) == checksum:
            continue
        rebuilt = restore(data, known[filename], path)
        if sha256(rebuilt) != checksum:
            raise MirrorError(
                f"{path} holds the original contents (decompressed SHA-256 checked) but "
                "was recompressed, not only given a new gzip header, so the file TFDS "
                "checks cannot be rebuilt from it; put the original download in "
                f"{manual_dir} instead.")
        restored[filename] = rebuilt
    if not restored:
        return manual_dir
    os.makedirs(staging_dir, exist_ok=True)
    for name in os.listdir(manual_dir):
        target = os.path.join(staging_dir, name)
        if name in restored:
            with open(target, "wb") as f:
                f.write(restored[name])
        else:
            os.symlink(os.path.abspath(os.path.join(manual_dir, name)), target)
    return staging_dir
