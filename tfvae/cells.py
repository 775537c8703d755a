"""Residual cells: the deterministic layers of a deep convolutional hierarchy.

A cell keeps the shape of its feature map [N, H, W, C] and adds a branch to it
(He et al. 2016; the bottleneck cell of VDVAE, Child 2021):

    y = x + s * conv_1x1(a(conv_kxk(a(conv_kxk(a(conv_1x1(a(x))))))))

with a = ReLU, a bottleneck of `bottleneck` channels between the 1x1 convolutions,
and the last convolution's initial kernel scaled by s = 1 / sqrt(number of cells in
the network), so that a stack of n cells starts with a variance that does not grow
with n. With `activation=None` and `kernel_size=1` a cell is a linear map of each
pixel (x -> (I + M) x), which the tests use to build linear-Gaussian hierarchies
with a known log p(x).

Between cells the resolution changes by `downsample` (average pooling, bottom-up)
and `upsample` (nearest-neighbour copies, top-down); `fold` and `unfold` put the
leading sample axes of [k, B, H, W, C] maps into one batch axis and back.
"""

import math

import keras
import tensorflow as tf

from tfvae.checks import check_count


@keras.saving.register_keras_serializable(package="tfvae")
class ResidualCell(keras.layers.Layer):
    """x + branch(x) for feature maps [N, H, W, channels].

    Args:
        channels: width C of the map (input and output).
        bottleneck: channels inside the branch.
        kernel_size: of the two middle convolutions (3; 1 makes a per-pixel cell).
        activation: "relu" (or any Keras activation; GELU and swish are 2x slower
            in bfloat16 on a CPU, measured); None for a linear cell.
        num_cells: cells in the whole network; the last convolution starts scaled by
            1 / sqrt(num_cells).
    """

    def __init__(self, channels, bottleneck=None, kernel_size=3, activation="relu",
                 num_cells=1, **kwargs):
        super().__init__(**kwargs)
        self.channels = check_count(channels, "cell channels")
        self.bottleneck = check_count(bottleneck or channels, "cell bottleneck")
        self.kernel_size = check_count(kernel_size, "kernel_size")
        self.activation = activation
        self.num_cells = check_count(num_cells, "num_cells")
        scale = 1.0 / math.sqrt(self.num_cells)
        sizes = (1, self.kernel_size, self.kernel_size, 1)
        widths = (self.bottleneck,) * 3 + (self.channels,)
        self.convs = [
            keras.layers.Conv2D(width, size, padding="same", name=f"conv_{i}",
                                kernel_initializer=keras.initializers.VarianceScaling(
                                    scale ** 2 if i == 3 else 1.0, "fan_in",
                                    "truncated_normal"))
            for i, (width, size) in enumerate(zip(widths, sizes))]

    def build(self, input_shape):
        shape = (None, *tuple(input_shape)[1:3], self.channels)
        for conv in self.convs:
            conv.build(shape)
            shape = (*shape[:3], conv.filters)

    def call(self, x):
        h = x
        for conv in self.convs:
            h = conv(self._act(h))
        return x + h

    def _act(self, x):
        return x if self.activation is None else keras.activations.get(self.activation)(x)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels,
                "bottleneck": self.bottleneck, "kernel_size": self.kernel_size,
                "activation": self.activation, "num_cells": self.num_cells}


def downsample(x, factor):
    """[N, H, W, C] -> [N, H / factor, W / factor, C] by average pooling."""
    if factor == 1:
        return x
    return tf.nn.avg_pool2d(x, factor, factor, "VALID")


def upsample(x, factor):
    """[N, H, W, C] -> [N, H * factor, W * factor, C] by copying each pixel."""
    if factor == 1:
        return x
    return tf.repeat(tf.repeat(x, factor, axis=1), factor, axis=2)


def cell_stack(count, channels, bottleneck, kernel_size, activation, num_cells, prefix):
    """`count` residual cells of one width, named prefix_0, prefix_1, ..."""
    return [ResidualCell(channels, bottleneck, kernel_size, activation, num_cells,
                         name=f"{prefix}_{i}") for i in range(count)]


def build_cells(cells, shape):
    for cell in cells:
        cell.build(shape)


def run_cells(cells, x):
    for cell in cells:
        x = cell(x)
    return x


def fold(x, rank):
    """(x with its leading axes folded into one [N, ...rank trailing axes], the
    leading shape) for convolutions over [k, B, ...] tensors. The trailing axes stay
    static (TFLite converts convolutions of known channels only)."""
    return tf.reshape(x, [-1, *x.shape[-rank:]]), tf.shape(x)[:-rank]


def unfold(x, lead):
    """The inverse of `fold`: [N, ...] -> [*lead, ...], trailing axes static."""
    return with_trailing(tf.reshape(x, tf.concat([lead, tf.shape(x)[1:]], 0)),
                         x.shape[1:])


def with_trailing(x, trailing):
    """x with its static trailing axes set to `trailing` (a reshape by a computed
    shape loses them)."""
    x.set_shape([None] * (x.shape.rank - len(trailing)) + list(trailing))
    return x
