"""The discretized logistic mixture: a likelihood of 8-bit images (PixelCNN++, VDVAE).

A pixel of C channels holds integer levels l_c in 0..255; tfvae feeds images as floats
x_c = l_c / 255 in [0, 1] (the pipeline's convention), and this distribution takes and
returns that scale (a float x is read as the nearest level). Level l is the bin
[x - h, x + h] of a continuous variable, h = 1 / 510 (half a level); the edge bins take
the tails: level 0 is (-inf, h], level 255 is [1 - h, inf). Per pixel, a mixture of K
components (Salimans et al. 2017, PixelCNN++, eq. 2-3; Child 2021, VDVAE's DmolNet):

    P(l) = sum_k pi_k prod_c P_k(l_c | l_<c),
    P_k(l_c | l_<c) = F((x_c + h - m_kc) / s_kc) - F((x_c - h - m_kc) / s_kc),

F the logistic CDF sigmoid, s_kc the scale (on the [0, 1] scale of x), and for the
edge levels F(+inf) = 1, F(-inf) = 0. Channels are coupled as in PixelCNN++: one
component k for the whole pixel, and the location of channel c moves linearly with the
values of the channels before it,

    m_kc = mu_kc + sum_{j < c} a_kcj x_j      (RGB: m_G = mu_G + a x_R,
                                                     m_B = mu_B + b x_R + g x_G),

so each factor is a normalized distribution over 0..255 given the levels before it,
and the image's probability is the product over pixels: `log_prob` returns
log P(image) (event shape [H, W, C]), a log-probability <= 0.

Numerics. PixelCNN++ subtracts two sigmoids in float32 and falls back to the
density at the bin's midpoint where the difference underflows. Here the difference is
taken in log space exactly, for a > b:

    sigmoid(a) - sigmoid(b) = sigmoid(a) sigmoid(-b) (1 - exp(b - a)),
    log(...) = log_sigmoid(a) + log_sigmoid(-b) + log(-expm1(-(a - b))),

with a - b = 2h / s > 0 whatever the location: every term is finite and accurate for
any a, b (both far in one tail included), and so is its gradient, so no fallback is
needed. The edge levels are log_sigmoid(a) (level 0) and log_sigmoid(-b) (level 255).
a and b are computed in units of levels, (l +- 1/2 - 255 m) / (255 s), where the edges
are exact floats and shared by neighbouring levels: the 256 probabilities telescope to
1 even at scales far below a level.

Parameters from a network: per pixel K (1 + 2C + C(C-1)/2) numbers (3K for grey, 10K
for RGB), laid out as [mixture logits K | mu C*K | raw scales C*K | raw coupling
coefficients C(C-1)/2 * K], each block channel-major (index c * K + k); the coupling
coefficients in the order (1, 0), (2, 0), (2, 1), ... of (c, j), i.e. for RGB
(G from R, B from R, B from G) as PixelCNN++. mu is taken as is,
s = softplus(raw) + MIN_SCALE (finite for any raw; MIN_SCALE is PixelCNN++'s floor
e^-7 on [-1, 1], e^-7 / 2 on [0, 1]) and a = tanh(raw), as in PixelCNN++. Log-probs
are computed in float32 whatever the compute policy.

Sampling (built-in TensorFlow ops only, so a TFLite file needs no Flex delegate): the
component by Gumbel-max, k = argmax_k (log pi_k - log(-log u_k)); then channel by
channel in order, a logistic draw y = m_kc + s_kc (log u - log(1 - u)) with u ~ U(0, 1)
and the level round(255 y) clipped to 0..255, whose value then enters the locations
of the later channels. This is exact ancestral sampling of P (a level is the bin its
continuous draw falls in).

mean(): sum_k pi_k E_k[clip(y, 0, 1)], with E[clip(y, 0, 1)] of a logistic in closed
form, s [softplus(m / s) - softplus((m - 1) / s)]: the mean of the clipped continuous
variable, within half a level of the mean level. For coupled channels the earlier
channels enter at their component means (exact without clipping, where the means are
linear; a close approximation with it).
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

NUM_LEVELS = 256
MIN_SCALE = 0.5 * math.exp(-7.0)
DEFAULT_COMPONENTS = 10  # PixelCNN++'s and VDVAE's K, grey or RGB
MAX_COMPONENTS = 256


def num_coefficients(channels):
    """Coupling coefficients per component: one for each pair j < c."""
    return channels * (channels - 1) // 2


def params_per_pixel(channels, components=DEFAULT_COMPONENTS):
    """Network outputs per pixel of `channels` channels: K (1 + 2C + C(C-1)/2)."""
    return components * (1 + 2 * channels + num_coefficients(channels))


def log_sigmoid_difference(a, b):
    """log(sigmoid(a) - sigmoid(b)) for a > b, exact in log space (module docstring)."""
    return tf.math.log_sigmoid(a) + tf.math.log_sigmoid(-b) + tf.math.log(
        -tf.math.expm1(b - a))


def clipped_logistic_mean(loc, scale):
    """E[clip(y, 0, 1)] for y ~ Logistic(loc, scale): s [softplus(m/s) - softplus((m-1)/s)]."""
    mean = scale * (tf.math.softplus(loc / scale) - tf.math.softplus((loc - 1.0) / scale))
    return tf.clip_by_value(mean, 0.0, 1.0)


def _pairs(channels):
    """(c, j, index of their coefficient) for j < c, in the layout's order."""
    index = 0
    for c in range(1, channels):
        for j in range(c):
            yield c, j, index
            index += 1


class DiscretizedLogisticMixture(tfd.Distribution):
    """Images of 8-bit levels (as x = level / 255), a mixture of K discretized
    logistics per pixel with PixelCNN++'s channel coupling (module docstring).

    Args:
        logits: mixture logits [..., H, W, K].
        loc: mu [..., H, W, C, K] on the [0, 1] scale.
        scale: s [..., H, W, C, K] > 0 on the [0, 1] scale.
        coefficients: a [..., H, W, C(C-1)/2, K] (None for C = 1).

    Batch shape [...], event shape [H, W, C]; `log_prob` of images [..., H, W, C]
    broadcasts against the batch (k samples of z [k, B] score B images untiled).
    """

    def __init__(self, logits, loc, scale, coefficients=None, validate_args=False,
                 allow_nan_stats=True, name="likelihood"):
        parameters = dict(locals())
        with tf.name_scope(name) as name:
            self._logits = tf.cast(logits, tf.float32)
            self._loc = tf.cast(loc, tf.float32)
            self._scale = tf.cast(scale, tf.float32)
            self._channels = int(self._loc.shape[-2])
            if self._channels > 1 and coefficients is None:
                raise ValueError(f"{self._channels} channels need coupling coefficients "
                                 f"[..., H, W, {num_coefficients(self._channels)}, K].")
            self._coefficients = None if self._channels == 1 else tf.cast(
                coefficients, tf.float32)
            super().__init__(dtype=tf.float32,
                             reparameterization_type=tfd.NOT_REPARAMETERIZED,
                             validate_args=validate_args, allow_nan_stats=allow_nan_stats,
                             parameters=parameters, name=name)

    @classmethod
    def from_params(cls, params, channels, name="likelihood"):
        """From unconstrained network outputs [..., H, W, params_per_pixel(C, K)]
        (the layout of the module docstring); K is inferred."""
        params = tf.cast(params, tf.float32)
        per_component = params_per_pixel(channels, 1)
        width = params.shape[-1]
        if width is None or width % per_component:
            raise ValueError(f"A discretized logistic mixture of {channels} channel(s) "
                             f"takes a multiple of {per_component} parameters per pixel, "
                             f"got {width}.")
        k = width // per_component
        sizes = [k, channels * k, channels * k, num_coefficients(channels) * k]
        logits, loc, raw_scale, raw_coefficients = tf.split(params, sizes, axis=-1)

        def per_channel(tensor, count):
            lead = tf.shape(tensor)[:-1]
            return tf.reshape(tensor, tf.concat([lead, [count, k]], axis=0))

        coefficients = None if channels == 1 else tf.math.tanh(
            per_channel(raw_coefficients, num_coefficients(channels)))
        return cls(logits, per_channel(loc, channels),
                   tf.math.softplus(per_channel(raw_scale, channels)) + MIN_SCALE,
                   coefficients, name=name)

    # -- shapes -------------------------------------------------------------------

    def _batch_shape(self):
        return self._loc.shape[:-4]

    def _batch_shape_tensor(self):
        return tf.shape(self._loc)[:-4]

    def _event_shape(self):
        return self._loc.shape[-4:-1]

    def _event_shape_tensor(self):
        return tf.shape(self._loc)[-4:-1]

    @property
    def num_components(self):
        return int(self._logits.shape[-1])

    # -- the parts ------------------------------------------------------------------

    def _coupled_loc(self, values, loc, coefficients):
        """m_c = mu_c + sum_{j<c} a_cj x_j: `loc` [..., C, K'] moved by `values`
        [..., C, K'] (levels or component means), `coefficients` [..., C(C-1)/2, K']."""
        if self._channels == 1:
            return loc
        shifts = [0.0] * self._channels
        for c, j, index in _pairs(self._channels):
            shifts[c] = shifts[c] + coefficients[..., index, :] * values[..., j, :]
        shifts[0] = tf.zeros_like(shifts[1])
        return loc + tf.stack(shifts, axis=-2)

    def channel_log_probs(self, x):
        """log P_k(l_c | l_<c) [..., H, W, C, K] of images `x` [..., H, W, C] in [0, 1]
        (read as their nearest levels), for each channel and component.

        Computed in units of levels, where the bin edges l +- 1/2 are exact floats:
        the upper edge of level l and the lower edge of l + 1 are then the same number,
        so the probabilities of the 256 levels telescope to 1 even at scales far
        below a level (on the [0, 1] scale, l / 255 +- 1 / 510 rounds differently on
        the two sides)."""
        top = NUM_LEVELS - 1.0
        levels = tf.clip_by_value(tf.round(tf.cast(x, tf.float32) * top), 0.0, top)
        levels = tf.expand_dims(levels, -1)
        loc = top * self._coupled_loc(levels / top, self._loc, self._coefficients)
        scale = top * self._scale
        upper = (levels + 0.5 - loc) / scale
        lower = (levels - 0.5 - loc) / scale
        return tf.where(levels <= 0.0, tf.math.log_sigmoid(upper),
                        tf.where(levels >= top, tf.math.log_sigmoid(-lower),
                                 log_sigmoid_difference(upper, lower)))

    def _log_prob(self, x):
        per_component = tf.reduce_sum(self.channel_log_probs(x), axis=-2)  # [..., H, W, K]
        log_pixels = tf.reduce_logsumexp(
            tf.nn.log_softmax(self._logits) + per_component, axis=-1)
        return tf.reduce_sum(log_pixels, axis=[-2, -1])

    def _sample_n(self, n, seed=None):
        seeds = [None] * (1 + self._channels) if seed is None else list(
            tfp.random.split_seed(seed, n=1 + self._channels))
        lead = tf.concat([[n], tf.shape(self._logits)[:-1]], axis=0)  # [n, ..., H, W]
        logits = tf.broadcast_to(self._logits, tf.concat([lead, [self.num_components]], 0))
        component = tf.argmax(logits - tf.math.log(-tf.math.log(
            uniform(tf.shape(logits), seeds[0]))), axis=-1, output_type=tf.int32)
        chosen = tf.expand_dims(tf.one_hot(component, self.num_components), -2)  # [n,...,1,K]

        def pick(tensor):  # [..., C', K] -> [n, ..., H, W, C'] of the chosen component
            return tf.reduce_sum(tensor * chosen, axis=-1)

        loc, scale = pick(self._loc), pick(self._scale)
        coefficients = None if self._channels == 1 else pick(self._coefficients)
        values = []
        for c in range(self._channels):
            u = uniform(tf.shape(loc[..., c]), seeds[1 + c])
            mean = loc[..., c]
            for target, j, index in _pairs(self._channels):
                if target == c:
                    mean = mean + coefficients[..., index] * values[j]
            draw = mean + scale[..., c] * (tf.math.log(u) - tf.math.log(1.0 - u))
            values.append(nearest_level(draw))
        return tf.stack(values, axis=-1)

    def component_means(self):
        """E_k[clip(y_c, 0, 1)] [..., H, W, C, K], the earlier channels of the
        coupling at their component means (module docstring)."""
        means = []
        for c in range(self._channels):
            loc = self._loc[..., c, :]
            for target, j, index in _pairs(self._channels):
                if target == c:
                    loc = loc + self._coefficients[..., index, :] * means[j]
            means.append(clipped_logistic_mean(loc, self._scale[..., c, :]))
        return tf.stack(means, axis=-2)

    def _mean(self):
        weights = tf.expand_dims(tf.nn.softmax(self._logits), -2)
        return tf.reduce_sum(weights * self.component_means(), axis=-1)

    def decoded_parameters(self):
        """The exported `decode` signature's parameters (`distributions.
        likelihood_parameters`): mixture_logits [..., H, W, K]; loc, scale
        [..., H, W, C, K] on the [0, 1] scale; for C > 1 coefficients
        [..., H, W, C(C-1)/2, K]."""
        named = {"mixture_logits": self._logits, "loc": self._loc, "scale": self._scale}
        if self._coefficients is not None:
            named["coefficients"] = self._coefficients
        return named


def nearest_level(values):
    """Values on the [0, 1] scale moved to the nearest of the 256 levels l / 255 (those
    beyond the ends to 0 or 1)."""
    top = NUM_LEVELS - 1.0
    return tf.clip_by_value(tf.round(values * top), 0.0, top) / top


def uniform(shape, seed):
    """U(tiny, 1): `tf.random.uniform` (a TFLite built-in op) when `seed` is None,
    else the stateless sampler (reproducible). The draws of every likelihood
    (this one's, `pixelcnn.py`'s) take it, so an export's unseeded draws convert."""
    tiny = 1e-20  # log(-log u) and log(u) stay finite
    if seed is None:
        return tf.random.uniform(shape, minval=tiny, maxval=1.0)
    return tf.random.stateless_uniform(shape, tfp.random.sanitize_seed(seed),
                                       minval=tiny, maxval=1.0)
