"""Spatial latents: a deep convolutional top-down hierarchy built from residual cells.

The hierarchy of `hierarchy.py` with feature maps in place of vectors (the conv ladder
VAE of Sønderby et al. 2016, IAF-VAE's ResNet VAE, NVAE, VDVAE): every latent group
z_l is a map [h_l, w_l, c_z], the top-down state h_l a map [h_l, w_l, C].

    bottom-up   d_1 .. d_L = cells on the way down from the image (one per group)
    top         q(z_L|x) = N(conv(d_L)),   p(z_L) = N(0, I)
    block l<L   h_l = cells(up(h_{l+1} + W_l z_{l+1}))            (h_L: W_L z_L alone)
                p(z_l | z_{>l})    = N(conv(h_l))
                q(z_l | z_{>l}, x) = N(conv([h_l, d_l]))
    decoder     p(x | z) = likelihood(conv(cells(up(conv_1x1([z_1, h_1])))))

with `up` a nearest-neighbour upsampling where the next group is finer. The whole
hierarchy is one line of config (as VDVAE's decoder string): `parse_groups("7x2,
14x2", (28, 28, 1))` is two groups, z_2 at 7x7 and z_1 at 14x14, each after 2
residual cells.

To the `VAE` a spatial group is a vector: z_l flattened in (height, width, channel)
order, so codes, rates per dimension, free bits, IWAE, `decode(z)` and the exported
`z` work unchanged (`z` of an exported spatial model is every group's map flattened,
top first). The blocks reshape at their edges. Leading sample axes ([k, B]) are
folded into the batch axis for the convolutions and unfolded after.
"""

import math
import re

import keras
import tensorflow as tf

from tfvae import distributions, pixelcnn
from tfvae.cells import (build_cells, cell_stack, downsample, fold, run_cells, unfold,
                         upsample, with_trailing)
from tfvae.checks import check_count
from tfvae.networks import _Decoder

_GROUP = re.compile(r"^(\d+)x(\d+)$")
_SOFTPLUS_INV_1 = math.log(math.e - 1.0)  # softplus(0.5413) = 1
MAX_CELLS = 64  # per group, and groups per hierarchy


def parse_groups(spec, image_shape):
    """[(height, width, cells), ...] of the groups in `spec`, top first.

    `spec` is "RxN,RxN,...": a group at height R (the width scaled alike) after N
    residual cells. R must divide the image height by a power of two, and the groups
    may only get finer going down.
    """
    height, width = image_shape[:2]
    groups = []
    for part in str(spec).replace(" ", "").split(","):
        match = _GROUP.match(part)
        if not match:
            raise ValueError(f"latent_groups entries are RxN (resolution x cells), e.g. "
                             f"'7x2,14x2'; got {part!r} in {spec!r}.")
        rows, cells = int(match.group(1)), int(match.group(2))
        factor = height // rows if rows else 0
        if (not rows or height % rows or factor & (factor - 1) or width % factor):
            raise ValueError(f"latent group {part!r}: {rows} must divide the image "
                             f"size {height}x{width} by a power of two.")
        groups.append((rows, width // factor,
                       check_count(cells, "cells per group", MAX_CELLS)))
    if len(groups) > MAX_CELLS:
        raise ValueError(f"latent_groups lists {len(groups)} groups; at most {MAX_CELLS}.")
    if any(a[0] > b[0] for a, b in zip(groups, groups[1:])):
        raise ValueError(f"latent_groups go from coarse (top) to fine, got {spec!r}.")
    return groups


def as_map(z, shape):
    """Flat codes [..., h * w * c] -> maps [N, h, w, c] (leading axes folded)."""
    return tf.reshape(z, [-1, *shape])


def spatial_gaussian(params, min_scale):
    """A diagonal Gaussian over a flattened map from conv outputs [..., h, w, 2c]:
    channels [:c] are the means, [c:] the raw scales."""
    loc, raw_scale = tf.split(tf.cast(params, tf.float32), 2, axis=-1)
    size = math.prod(loc.shape[-3:])
    flat = [with_trailing(tf.reshape(t, tf.concat([tf.shape(t)[:-3], [size]], 0)), [size])
            for t in (loc, raw_scale)]
    return distributions.gaussian_posterior(tf.concat(flat, -1), min_scale)


def _conv(channels, kernel_size, name):
    return keras.layers.Conv2D(channels, kernel_size, padding="same", name=name)


def _gaussian_head(latent_channels, kernel_size, name):
    """A convolution to a Gaussian's [loc, raw scale] maps that starts near N(0, I):
    small kernels (`_start_near_unit` sets the biases once built), so that a fresh
    hierarchy's KL starts near 0 instead of about 0.1-1 nats per dimension."""
    return keras.layers.Conv2D(
        2 * latent_channels, kernel_size, padding="same", name=name,
        kernel_initializer=keras.initializers.VarianceScaling(0.01, "fan_in"))


def _start_near_unit(head, shape):
    """Builds `head` on `shape`; raw scales start at softplus^-1(1), means at 0."""
    head.build(shape)
    half = head.filters // 2
    head.bias.assign(tf.concat([tf.zeros([half]), tf.fill([half], _SOFTPLUS_INV_1)], 0))


class _CellOptions:
    """The residual cells' options, shared by the encoder, the blocks and the decoder.

    Args:
        channels: width C of the residual stream.
        latent_channels: channels c_z of every latent group.
        bottleneck: channels inside each residual cell (0: C / 2).
        kernel_size: of the cells' and heads' convolutions (1: per-pixel, linear
            tests).
        activation: of the cells; None for linear cells.
        num_cells: cells in the whole network (their initial scale).
    """

    CELL_OPTIONS = ("channels", "latent_channels", "bottleneck", "kernel_size",
                    "activation", "num_cells")

    def set_cell_options(self, channels=64, latent_channels=16, bottleneck=0,
                         kernel_size=3, activation="relu", num_cells=1):
        self.channels = check_count(channels, "cell_channels")
        self.latent_channels = check_count(latent_channels, "latent_channels")
        self.bottleneck = int(bottleneck) or max(1, self.channels // 2)
        self.kernel_size = check_count(kernel_size, "kernel_size")
        self.activation = activation
        self.num_cells = check_count(num_cells, "num_cells")

    def cells(self, count, prefix):
        return cell_stack(count, self.channels, self.bottleneck, self.kernel_size,
                          self.activation, self.num_cells, prefix)

    def cell_config(self):
        return {name: getattr(self, name) for name in self.CELL_OPTIONS}


class _Spatial(_CellOptions, keras.layers.Layer):
    """A layer of the hierarchy: `_CellOptions`, and min_scale, the floor on the
    standard deviations."""

    def __init__(self, channels=64, latent_channels=16, bottleneck=0, kernel_size=3,
                 activation="relu", num_cells=1, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.set_cell_options(channels, latent_channels, bottleneck, kernel_size,
                              activation, num_cells)
        self.min_scale = float(min_scale)

    def kl_units(self, rate_per_dim):
        """Free bits' units: [B, h * w * c_z] -> [B, c_z], each channel map's KL
        summed over its positions."""
        maps = tf.reshape(rate_per_dim, [tf.shape(rate_per_dim)[0], -1,
                                         self.latent_channels])
        return tf.reduce_sum(maps, axis=1)

    def get_config(self):
        return {**super().get_config(), **self.cell_config(), "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="tfvae")
class ResNetEncoder(_Spatial):
    """The bottom-up path and q(z_L|x): features d_1 .. d_L of the images.

    Args:
        image_shape: (H, W, C) of the images.
        groups: `parse_groups` of the hierarchy, top first.
        context_dim: size of a conditional model's context c (0: none); c enters as a
            learned bias of the stem's output.
        the rest: as `_Spatial`.

    `features(images)` lists the maps d_l bottom first ([B, h_l, w_l, C]): the group
    below the top reads features[-2], and so on (as `VAE` walks them).
    """

    posterior = "gaussian"
    diagonal_gaussian = True

    def __init__(self, image_shape, groups, context_dim=0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.groups = [tuple(int(v) for v in g) for g in groups]
        self.context_dim = int(context_dim)
        top = self.groups[0]
        self.top_shape = (top[0], top[1], self.latent_channels)
        self.latent_dim = math.prod(self.top_shape)
        self.stem = _conv(self.channels, 3, "stem")
        self.context_bias = keras.layers.Dense(self.channels, use_bias=False,
                                               name="context_bias")
        # Bottom-up: the groups from the bottom, each after its cells.
        self.stages = [self.cells(g[2], f"up_{i}") for i, g in enumerate(self.groups[::-1])]
        self.head = _gaussian_head(self.latent_channels, self.kernel_size,
                                   "top_posterior")

    def build(self, input_shape=None):
        height, width, channels = self.image_shape
        self.stem.build((None, height, width, channels))
        if self.context_dim:
            self.context_bias.build((None, self.context_dim))
        for stage, group in zip(self.stages, self.groups[::-1]):
            build_cells(stage, (None, group[0], group[1], self.channels))
        _start_near_unit(self.head, (None, *self.groups[0][:2], self.channels))

    def features(self, images, training=None, context=None):
        h = self.stem(images)
        if self.context_dim:
            h = h + self.context_bias(context)[:, None, None, :]
        features = []
        for stage, group in zip(self.stages, self.groups[::-1]):
            h = run_cells(stage, downsample(h, h.shape[1] // group[0]))
            features.append(h)
        return features

    def top_posterior(self, features):
        return spatial_gaussian(self.head(features), self.min_scale)

    def call(self, images, context=None, training=None):
        return self.top_posterior(self.features(images, training, context)[-1])

    @staticmethod
    def code(posterior):
        return posterior.mean()

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape,
                "groups": self.groups, "context_dim": self.context_dim}


@keras.saving.register_keras_serializable(package="tfvae")
class SpatialBlock(_Spatial):
    """One latent group l < L: its state h_l, p(z_l | z_{>l}) and q(z_l | z_{>l}, x).

    Args:
        group: (h, w, cells) of this group.
        above: (h, w) of the group above (its z and state).
        context_dim: size of a conditional model's context (a learned bias of h_l).
        the rest: as `_Spatial`.
    """

    def __init__(self, group, above, context_dim=0, **kwargs):
        super().__init__(**kwargs)
        self.group = tuple(int(v) for v in group)
        self.above = tuple(int(v) for v in above)
        self.context_dim = int(context_dim)
        self.map_shape = (self.group[0], self.group[1], self.latent_channels)
        self.latent_dim = math.prod(self.map_shape)
        self.z_proj = _conv(self.channels, 1, "z_proj")
        self.context_bias = keras.layers.Dense(self.channels, use_bias=False,
                                               name="context_bias")
        self.stage = self.cells(self.group[2], "down")
        self.prior_head = _gaussian_head(self.latent_channels, self.kernel_size, "prior")
        self.posterior_head = _gaussian_head(self.latent_channels, self.kernel_size,
                                             "posterior")

    def build(self, input_shape=None):
        rows, cols = self.group[:2]
        self.z_proj.build((None, *self.above, self.latent_channels))
        if self.context_dim:
            self.context_bias.build((None, self.context_dim))
        build_cells(self.stage, (None, rows, cols, self.channels))
        _start_near_unit(self.prior_head, (None, rows, cols, self.channels))
        _start_near_unit(self.posterior_head, (None, rows, cols, 2 * self.channels))

    def state(self, z, state, context=None):
        """h_l [..., h, w, C] from z_{l+1} [..., D_{l+1}] and h_{l+1} (None for the
        first block), given the context [B, C_c] of a conditional model."""
        lead = tf.shape(z)[:-1]
        h = self.z_proj(as_map(z, (*self.above, self.latent_channels)))
        if state is not None:
            h = h + tf.cast(fold(state, 3)[0], h.dtype)
        if self.context_dim:
            bias = self.context_bias(context)  # [B, C] -> broadcast over [k, B]
            bias = tf.broadcast_to(bias, tf.concat([lead, tf.shape(bias)[-1:]], 0))
            h = h + tf.reshape(bias, [-1, 1, 1, self.channels])
        h = run_cells(self.stage, upsample(h, self.group[0] // self.above[0]))
        return unfold(h, lead)

    def prior_distribution(self, state):
        return spatial_gaussian(self._apply(self.prior_head, state), self.min_scale)

    def posterior_distribution(self, state, features):
        """q(z_l | .) from the state [..., B, h, w, C] and the features d_l [B, h, w, C]."""
        features = tf.broadcast_to(tf.cast(features, state.dtype), tf.shape(state))
        return spatial_gaussian(self._apply(self.posterior_head, tf.concat(
            [state, features], -1)), self.min_scale)

    @staticmethod
    def _apply(layer, x):
        folded, lead = fold(x, 3)
        return unfold(layer(folded), lead)

    @staticmethod
    def code(posterior):
        return posterior.mean()

    def decoder_input(self, z, state, context=None):
        """[z_l, h_l] as one map [..., h, w, c_z + C] (the context enters the decoder
        through h_l's bias)."""
        z = with_trailing(tf.reshape(z, tf.concat([tf.shape(z)[:-1], self.map_shape], 0)),
                          self.map_shape)
        return tf.concat([z, tf.cast(state, z.dtype)], -1)

    def decoder_input_shape(self, context_width=0):
        return (None, *self.group[:2], self.latent_channels + self.channels)

    def get_config(self):
        return {**super().get_config(), "group": self.group, "above": self.above,
                "context_dim": self.context_dim}


@keras.saving.register_keras_serializable(package="tfvae")
class ResNetDecoder(_CellOptions, _Decoder):
    """p(x | z_1, h_1): a 1x1 convolution of [z_1, h_1], upsampling to the image,
    residual cells at full resolution and a convolution to the likelihood's
    parameters; with `autoregressive_layers` > 0, a PixelCNN over the image adds to
    those (Bernoulli) logits: each pixel then depends on z and on the pixels before
    it (`pixelcnn.py`).

    Args:
        output_shape: (H, W, C) of the images.
        group: (h, w, ...) of the lowest latent group.
        cells: residual cells at full resolution.
        likelihood, min_scale: as the other decoders.
        channels, latent_channels, bottleneck, kernel_size, activation, num_cells: as
            `_CellOptions`.
        autoregressive_layers: masked convolutions of the PixelCNN (0: none, the
            factorized likelihood). Bernoulli, one channel. Its last layer starts at
            zero, so the decoder starts as (and loads the weights of) one without it.
        autoregressive_channels: their width.

    Call: maps [..., h, w, c_z + C] -> `ImageLikelihood` or, autoregressive,
    `pixelcnn.AutoregressiveBernoulli`; batch [...], event [H, W, C].
    """

    input_rank = 3

    def __init__(self, output_shape, group, cells=1, likelihood="bernoulli",
                 min_scale=1e-3, channels=64, latent_channels=16, bottleneck=0,
                 kernel_size=3, activation="relu", num_cells=1, autoregressive_layers=0,
                 autoregressive_channels=32, **kwargs):
        super().__init__(output_shape, likelihood, min_scale, **kwargs)
        self.set_cell_options(channels, latent_channels, bottleneck, kernel_size,
                              activation, num_cells)
        self.group = tuple(int(v) for v in group[:2])
        self.num_output_cells = int(cells)
        self.autoregressive_layers = int(autoregressive_layers)
        self.autoregressive_channels = check_count(autoregressive_channels,
                                                   "autoregressive_channels")
        self.merge = _conv(self.channels, 1, "merge")
        self.stage = self.cells(self.num_output_cells, "out")
        self.out = _conv(self.params_per_pixel, self.kernel_size, "likelihood_params")
        self.autoregressive = self._autoregressive_head()

    def _autoregressive_head(self):
        """The PixelCNN g of `pixelcnn.py`, or None for autoregressive_layers = 0."""
        if self.autoregressive_layers < 0:
            raise ValueError(f"autoregressive_layers must be >= 0, got "
                             f"{self.autoregressive_layers}.")
        if not self.autoregressive_layers:
            return None
        if self.likelihood != "bernoulli":
            raise ValueError(f"autoregressive_layers > 0 needs likelihood='bernoulli' "
                             f"(the PixelCNN head is Bernoulli), got {self.likelihood!r}.")
        return pixelcnn.PixelCNN(self.autoregressive_layers, self.autoregressive_channels,
                                 self.kernel_size, self.output_shape[-1],
                                 name="autoregressive")

    def build(self, input_shape=None):
        full = (None, *self.output_shape[:2])
        self.merge.build((None, *self.group, self.latent_channels + self.channels))
        build_cells(self.stage, (*full, self.channels))
        self.out.build((*full, self.channels))
        if self.autoregressive is not None:
            self.autoregressive.build((*full, self.output_shape[-1]),
                                      (*full, self.channels))

    def hidden_map(self, inputs):
        """The map h [N, H, W, C] that `likelihood_params` (and a PixelCNN) read."""
        h = self.merge(inputs)
        return run_cells(self.stage, upsample(h, self.output_shape[0] // self.group[0]))

    def parameters(self, inputs, training=None):
        return self.out(self.hidden_map(inputs))

    def call(self, z, training=None):
        if self.autoregressive is None:
            return super().call(z, training=training)
        folded, lead = fold(z, self.input_rank)
        hidden = self.hidden_map(folded)
        return pixelcnn.AutoregressiveBernoulli(
            unfold(self.out(hidden), lead), unfold(hidden, lead), self.autoregressive)

    def get_config(self):
        return {**super().get_config(), "group": self.group,
                "cells": self.num_output_cells, **self.cell_config(),
                "autoregressive_layers": self.autoregressive_layers,
                "autoregressive_channels": self.autoregressive_channels}
