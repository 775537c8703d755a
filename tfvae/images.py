"""Image grids and PNG files with numpy and zlib only.

Shared by `tfvae.plots` and `tools.sample`, whose LiteRT path runs where TensorFlow is
not installed: a PNG is an IHDR chunk, one zlib stream of rows (each led by filter
byte 0) and an IEND chunk, each chunk framed by its length and CRC-32.
"""

import math
import os
import struct
import zlib

import numpy as np


def class_rows(num_classes, per_class):
    """Labels [num_classes * per_class] for a grid with one row per class:
    0 (per_class times), 1, ..., num_classes - 1."""
    return np.repeat(np.arange(int(num_classes)), int(per_class))


def image_grid(images, columns=None, padding=1, zoom=1, background=1.0):
    """Tiles images [N, H, W, C] (floats in [0, 1]) into one uint8 image.

    Args:
        columns: images per row; about sqrt(N) by default.
        padding: pixels of `background` between and around the images.
        zoom: integer upscaling factor (nearest neighbour), applied to the images
            before tiling.

    Returns:
        uint8 array [rows * (zoom H + padding) + padding,
                     columns * (zoom W + padding) + padding, C], C in {1, 3}.
    """
    images = np.asarray(images, np.float32)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise ValueError(f"Expected images [N, H, W, 1 or 3], got shape {images.shape}.")
    zoom, padding = int(zoom), int(padding)
    if zoom < 1 or padding < 0:
        raise ValueError(f"zoom must be >= 1 and padding >= 0, got {zoom}, {padding}.")
    if zoom > 1:
        images = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    count, height, width, channels = images.shape
    columns = int(columns or math.ceil(math.sqrt(count)))
    rows = math.ceil(count / columns)
    grid = np.full([rows * (height + padding) + padding,
                    columns * (width + padding) + padding, channels],
                   background, np.float32)
    for index, image in enumerate(images):
        top = padding + (index // columns) * (height + padding)
        left = padding + (index % columns) * (width + padding)
        grid[top:top + height, left:left + width] = image
    return np.round(np.clip(grid, 0.0, 1.0) * 255).astype(np.uint8)


def encode_png(grid):
    """uint8 [H, W, C] (C = 1 grey, 3 RGB, 4 RGBA) -> PNG bytes, with zlib only."""
    height, width, channels = grid.shape
    color_type = {1: 0, 3: 2, 4: 6}[channels]
    rows = np.concatenate([np.zeros((height, 1), np.uint8),  # filter type 0 per row
                           np.ascontiguousarray(grid, np.uint8).reshape(height, -1)], 1)

    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 9)) + chunk(b"IEND", b""))


def write_png(path, image):
    """Writes a uint8 array [H, W, C] as a PNG file; creates missing directories."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "wb") as f:
        f.write(encode_png(np.asarray(image, np.uint8)))
    return path
