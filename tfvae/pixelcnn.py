"""An autoregressive Bernoulli likelihood: masked convolutions (PixelCNN) over a decoder.

The decoders' factorized likelihood p(x|z) = prod_i Ber(x_i; sigmoid(b_i(z))) makes
the pixels independent given z, so z must carry all of an image's local structure
(where a stroke goes on). PixelVAE (Gulrajani et al. 2017) and VLAE (Chen et al. 2017)
let each pixel see the pixels before it as well:

    p(x|z) = prod_i Ber(x_i; sigmoid(l_i)),   l_i = b_i(z) + g_i(x_<i, h(z)),

with i in raster order (row by row, each row left to right), b(z) the decoder's own
logits (its `likelihood_params` convolution) and h(z) the map that convolution reads.
g is a small PixelCNN (van den Oord et al. 2016) of `layers` masked convolutions:

    a_1 = relu(A * x + W_1 h)
    a_j = a_{j-1} + relu(B_j * a_{j-1} + W_j h)        j = 2 .. layers
    g   = V a_layers + v                                (1x1; V = 0, v = 0 at start)

where `*` is a k x k convolution whose kernel is masked. Mask A keeps the taps
strictly before the centre in raster order (the rows above it, and the centre row
left of it), so (A * x)_i reads x_<i only; mask B keeps the centre tap too, so
(B * a)_i reads a_<=i, which depends on x_<i only. The W_j h are 1x1 convolutions of
h, which does not depend on x. So l_i is a function of z and x_<i alone: every factor
is a normalized Bernoulli given the pixels before it, and the product is a
normalized distribution over the 2^(H W) binary images whatever the weights. V and v
start at zero, so a fresh head gives l = b(z) exactly: the factorized model, whose
trained weights load unchanged (`--init_from`, `warmstart.py`: by path, the head's
weights new).

log_prob(x): x is given, so all the l_i come from one parallel pass of the net over
x (the masks hide x_>=i from l_i, as teacher forcing): a few more convolutions.
Sampling: x_i must be drawn before l_{i+1} can be computed, so an image takes H*W*C
passes of the net in sequence, in one `tf.while_loop` (a graph op: it runs in a
`tf.function`, in the SavedModel, and as TFLite's WHILE with built-in ops only).
l_i reads x in the R = layers * (k // 2) rows above pixel i and R columns either
side only, so each pass runs on that (R + 1) x (2R + 1) window instead of the image
(`ancestral_pixels`; 28 of MNIST's 784 pixels for R = 3, about 11x faster).

mean(): E[x] has no closed form (pixel i averages over the 2^(i-1) prefixes before
it). `mean()` is the conditional probabilities p(x_i = 1 | x^_<i, z) along the
greedy path x^_i = [p(x_i = 1 | x^_<i, z) > 1/2], one sequential loop like a sample.
It is deterministic (one z decodes to one image, so `decode`, `reconstruct` and the
exported signatures agree with the model and with each other), it is a sharp image
of the model's own kind, and for g = 0 (a fresh head) it is exactly sigmoid(b(z)),
the factorized model's mean. `sample()` draws the ancestral path x_i = [u_i < p_i]
with u_i ~ U(0, 1); the greedy path is the same loop with every u_i = 1/2.

Images of one channel only: the channel-ordered masks (R < G < B) that PixelCNN
uses for colour images are not built, and more channels are refused.
"""

import math

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import discretized, distributions
from tfvae.cells import fold, unfold, with_trailing
from tfvae.checks import check_count, choice

tfd = tfp.distributions

MASK_TYPES = ("A", "B")


def causal_mask(kernel_size, mask_type):
    """[k, k, 1, 1] of 0 and 1: the taps before the centre in raster order, and with
    mask type "B" the centre too (broadcast over the input and output channels)."""
    centre = kernel_size // 2
    mask = np.zeros([kernel_size, kernel_size, 1, 1], np.float32)
    mask[:centre] = 1.0
    mask[centre, :centre + (mask_type == "B")] = 1.0
    return mask


def check_single_channel(channels):
    if int(channels) != 1:
        raise ValueError(f"The autoregressive likelihood takes images of one channel; "
                         f"got {channels} (channel-ordered masks are not built).")


@keras.saving.register_keras_serializable(package="tfvae")
class MaskedConv2D(keras.layers.Conv2D):
    """A "same" k x k convolution whose output at a pixel reads only the pixels before
    it in raster order (mask "A") or those and itself (mask "B"); see the module
    docstring. Single-channel images: every input channel is masked alike.

    Args:
        filters: output channels.
        kernel_size: an odd k.
        mask_type: "A" (the first layer, over the image) or "B" (later layers).
    """

    def __init__(self, filters, kernel_size, mask_type="B", **kwargs):
        super().__init__(filters, kernel_size, **{"padding": "same", **kwargs})
        self.mask_type = choice("mask_type", mask_type, MASK_TYPES)
        size = self.kernel_size[0]
        if (self.padding != "same" or self.kernel_size != (size, size) or size % 2 == 0
                or self.strides != (1, 1) or self.dilation_rate != (1, 1)
                or self.data_format != "channels_last"):
            raise ValueError(f"MaskedConv2D is a 'same', stride-1, channels-last "
                             f"convolution of an odd square kernel; got kernel_size "
                             f"{kernel_size}, {kwargs}.")
        self.mask = causal_mask(size, self.mask_type)

    def convolution_op(self, inputs, kernel):
        """The masked "same" convolution. The masked kernel's rows below the centre
        are zero, so only the rows down to the centre are convolved, over the input
        padded above and at both sides: the same output with (k // 2 + 1) / k of the
        multiplications (2/3 for k = 3; 20-25% less time here)."""
        centre = self.kernel_size[0] // 2
        mask = keras.ops.cast(self.mask[:centre + 1], kernel.dtype)
        padded = keras.ops.pad(inputs, [[0, 0], [centre, 0], [centre, centre], [0, 0]])
        return keras.ops.conv(padded, keras.ops.multiply(kernel[:centre + 1], mask),
                              strides=1, padding="valid")

    def get_config(self):
        return {**super().get_config(), "mask_type": self.mask_type}


@keras.saving.register_keras_serializable(package="tfvae")
class PixelCNN(keras.layers.Layer):
    """g(x, h): the autoregressive part of the logits (see the module docstring).

    Args:
        layers: masked convolutions (the first of mask A, the rest of mask B).
        channels: their width.
        kernel_size: of the masked convolutions (odd).
        image_channels: C of the images (1; more are refused).

    `conditioning(h)` turns the decoder's map h [N, H, W, C_h] into the per-layer
    terms W_j h (they do not depend on x: computed once per sample); `logits(x,
    conditioning)` is g [N, H, W, 1], float32, for images x [N, H, W, 1].
    """

    def __init__(self, layers, channels=32, kernel_size=3, image_channels=1, **kwargs):
        super().__init__(**kwargs)
        self.num_layers = check_count(layers, "autoregressive_layers")
        self.channels = check_count(channels, "autoregressive_channels")
        self.kernel_size = check_count(kernel_size, "kernel_size")
        check_single_channel(image_channels)
        self.image_channels = int(image_channels)
        self.masked = [MaskedConv2D(self.channels, self.kernel_size, "A" if j == 0 else "B",
                                    name=f"masked_{j}") for j in range(self.num_layers)]
        self.condition = keras.layers.Conv2D(self.channels * self.num_layers, 1,
                                             name="condition")
        self.out = keras.layers.Conv2D(self.image_channels, 1, name="logits",
                                       kernel_initializer="zeros",
                                       bias_initializer="zeros")

    def build(self, images_shape, hidden_shape):
        """images_shape (N, H, W, 1) and hidden_shape (N, H, W, C_h)."""
        self.condition.build(tuple(hidden_shape))
        shape = tuple(images_shape)
        for layer in self.masked:
            layer.build(shape)
            shape = (*shape[:3], self.channels)
        self.out.build(shape)
        self.built = True

    @property
    def reach(self):
        """R: g_i reads x up to R rows above pixel i and R columns either side."""
        return self.num_layers * (self.kernel_size // 2)

    def conditioning(self, hidden):
        """[W_1 h, ..., W_layers h], each [N, H, W, channels]."""
        return tf.split(self.condition(hidden), self.num_layers, axis=-1)

    def logits(self, images, conditioning, inside=None):
        """g [N, h, w, 1] (float32) of images [N, h, w, 1]. For a window of the image
        (`ancestral_pixels`), `inside` [1, h, w, 1] is 1 on its pixels of the image
        and 0 on its padding, where each layer's output is zeroed as the padding of a
        convolution over the whole image is."""
        a = tf.nn.relu(self.masked[0](images) + conditioning[0])
        for layer, term in zip(self.masked[1:], conditioning[1:]):
            if inside is not None:
                a = a * tf.cast(inside, a.dtype)
            a = a + tf.nn.relu(layer(a) + term)
        return tf.cast(self.out(a), tf.float32)

    def call(self, images, hidden):
        return self.logits(images, self.conditioning(hidden))

    def get_config(self):
        return {**super().get_config(), "layers": self.num_layers,
                "channels": self.channels, "kernel_size": self.kernel_size,
                "image_channels": self.image_channels}


def _broadcast_leading(tensor, lead):
    """[..., H, W, C] broadcast to [*lead, H, W, C] (trailing axes static)."""
    trailing = tensor.shape[-3:]
    return with_trailing(tf.broadcast_to(tensor, tf.concat([lead, tf.shape(tensor)[-3:]],
                                                           0)), trailing)


def ancestral_pixels(net, base, conditioning, thresholds):
    """(x, l(x)) [N, H, W, 1] along the path x_i = [u_i < sigmoid(l_i(x_<i))], drawn in
    raster order, for thresholds u [N, H, W, 1] in [0, 1], where l = base + g and g is
    the `PixelCNN` `net` under its `conditioning` terms.

    l_i at pixel (r, c) reads rows r-R..r and columns c-R..c+R only (R = `net.reach`;
    (r, c) is that window's bottom centre), so each step runs the net on the
    (R + 1) x (2R + 1) window of the padded image, not on the whole image (28x fewer
    pixels for R = 3 on MNIST). The window's own edge effects spread k // 2 pixels
    inward per layer, so after all the layers they stop one pixel short of (r, c),
    R pixels from the top, left and right edges; `inside` zeroes the padding as the
    whole image's convolutions do. l_i, computed at step i, is final
    (it reads x_<i only): the loop keeps each as the logits of the path.
    A while loop of TFLite built-in ops; called eagerly, it runs as a traced function
    (`_traced_ancestral_pixels`: traced once per net and shape, not H*W eager steps).
    """
    if tf.executing_eagerly():
        return _traced_ancestral_pixels(net, base, conditioning, thresholds)
    height, width = thresholds.shape[1:3]
    reach, size = net.reach, height * width
    pad = [[0, 0], [reach, 0], [reach, reach], [0, 0]]  # above, left and right
    padded = [tf.pad(term, pad) for term in conditioning]
    inside = tf.pad(tf.ones([1, height, width, 1]), pad)
    u, flat_base = (tf.reshape(t, [-1, size]) for t in (thresholds, base))

    def window(tensor, row, col):
        return tf.slice(tensor, tf.stack([0, row, col, 0]),
                        [-1, reach + 1, 2 * reach + 1, tensor.shape[-1]])

    def draw(i, x, logits):
        row, col = i // width, i % width
        g = net.logits(window(x, row, col), [window(t, row, col) for t in padded],
                       window(inside, row, col))
        logit = tf.gather(flat_base, i, axis=1) + g[:, reach, reach, 0]
        bit = tf.cast(tf.gather(u, i, axis=1) < tf.math.sigmoid(logit), x.dtype)
        here = tf.one_hot((row + reach) * (width + 2 * reach) + col + reach,
                          (height + reach) * (width + 2 * reach))
        x = x + bit[:, None, None, None] * tf.reshape(here, [1, *x.shape[1:]])
        return i + 1, x, logits + logit[:, None] * tf.one_hot(i, size)

    start = (tf.constant(0), tf.pad(tf.zeros_like(thresholds), pad), tf.zeros_like(u))
    _, x, logits = tf.while_loop(lambda i, *_: i < size, draw, start)
    return x[:, reach:, reach:reach + width], tf.reshape(logits, tf.shape(thresholds))


_traced_ancestral_pixels = tf.function(ancestral_pixels, autograph=False,
                                       reduce_retracing=True)


class AutoregressiveBernoulli(tfd.Distribution):
    """p(x|z) = prod_i Ber(x_i; sigmoid(b_i + g_i(x_<i, h))) over images, event shape
    [H, W, 1] (the module docstring has the maths and the meaning of `mean()`).

    Args:
        base_logits: b(z) [..., H, W, 1]; its leading shape is the batch shape (e.g.
            [k, B] for k samples of z per image).
        hidden: h(z) [..., H, W, C_h], of the same leading shape.
        net: the `PixelCNN` g.

    `log_prob(x)` takes images [B, H, W, 1] against a batch [k, B] (x is tiled over
    k inside: g needs x beside each h) and returns float32 [k, B].
    """

    def __init__(self, base_logits, hidden, net, validate_args=False,
                 allow_nan_stats=True, name="likelihood"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._base_logits = tf.cast(base_logits, tf.float32)
            self._hidden = hidden
            self._net = net
            self._greedy = None
            super().__init__(dtype=tf.float32,
                             reparameterization_type=tfd.NOT_REPARAMETERIZED,
                             validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                             parameters=parameters, name=name)

    def _batch_shape(self):
        return self._base_logits.shape[:-3]

    def _batch_shape_tensor(self):
        return tf.shape(self._base_logits)[:-3]

    def _event_shape(self):
        return self._base_logits.shape[-3:]

    def _event_shape_tensor(self):
        return tf.shape(self._base_logits)[-3:]

    def _folded_inputs(self, lead):
        """(b [N, H, W, 1], the net's conditioning terms [N, H, W, channels]) for
        images of leading shape `lead` (N = prod(lead)), computed once."""
        base = fold(_broadcast_leading(self._base_logits, lead), 3)[0]
        hidden = fold(_broadcast_leading(self._hidden, lead), 3)[0]
        return base, self._net.conditioning(hidden)

    def conditional_logits(self, images):
        """l(x) [*lead, H, W, 1]: the logit of each pixel given the pixels before it
        in `images` [..., H, W, 1] (lead: their leading shape and the batch shape,
        broadcast)."""
        images = tf.convert_to_tensor(images, tf.float32)
        lead = tf.broadcast_dynamic_shape(tf.shape(images)[:-3], self.batch_shape_tensor())
        base, conditioning = self._folded_inputs(lead)
        folded = fold(_broadcast_leading(images, lead), 3)[0]
        return unfold(base + self._net.logits(folded, conditioning), lead)

    def _log_prob(self, x):
        """sum_i log Ber(x_i; sigmoid(l_i(x_<i))): the factorized likelihood of the
        logits l(x), in float32 (`distributions.image_likelihood`)."""
        likelihood = distributions.image_likelihood("bernoulli",
                                                    self.conditional_logits(x), 0.0)
        return likelihood.log_prob(x)

    def path(self, thresholds):
        """(x, l(x)) [*lead, H, W, 1]: the images whose pixels are x_i = [u_i <
        sigmoid(l_i(x_<i))] in raster order, for thresholds u [*lead, H, W, 1] in
        [0, 1] (lead ending in the batch shape; `ancestral_pixels`): a sample for
        uniform u, the greedy path of `mean()` for u = 1/2."""
        lead = tf.shape(thresholds)[:-3]
        x, logits = ancestral_pixels(self._net, *self._folded_inputs(lead),
                                     fold(thresholds, 3)[0])
        return unfold(x, lead), unfold(logits, lead)

    def _sample_n(self, n, seed=None):
        shape = tf.concat([[n], self.batch_shape_tensor(), self.event_shape_tensor()], 0)
        thresholds = discretized.uniform(shape, seed)
        thresholds.set_shape([None, *self._base_logits.shape])
        return self.path(thresholds)[0]

    def greedy_logits(self):
        """l(x^) [..., H, W, 1] along the greedy path x^ (computed once)."""
        if self._greedy is None:
            self._greedy = self.path(0.5 * tf.ones_like(self._base_logits))[1]
        return self._greedy

    def _mean(self):
        """p(x_i = 1 | x^_<i, z) along the greedy path (see the module docstring)."""
        return tf.math.sigmoid(self.greedy_logits())

    def decoded_parameters(self):
        """What the exported `decode` returns beside the mean image: the logits along
        the greedy path (`distributions.likelihood_parameters`)."""
        return {"logits": self.greedy_logits()}
