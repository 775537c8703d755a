"""Distribution heads: network outputs -> `tfp.distributions` objects.

A head turns an unconstrained tensor of parameters into a distribution:

* posterior q(z|x) = N(z; mu, diag(sigma^2)), with sigma = softplus(s) + sigma_min.
  softplus keeps sigma finite for large |s| (no exp overflow) and sigma_min keeps
  log sigma bounded below, so log q(z|x) never becomes NaN.
* likelihood p(x|z) over a whole image (event shape [H, W, C]):
  - "bernoulli": p(x|z) = prod_i Ber(x_i; sigmoid(l_i)), parameterised by logits l
    (numerically exact log-probabilities, no clipping of sigmoid outputs);
    log Ber(x; sigmoid(l)) = x l - softplus(l), one softplus per pixel (TFP's own
    Bernoulli evaluates two; the value is the same for x in {0, 1});
  - "gaussian":  p(x|z) = prod_i N(x_i; mu_i, sigma_i^2), sigma_i = softplus + floor:
    a density of real-valued pixels (it can exceed 1; its log is not the log of a
    probability of 8-bit levels);
  - "discretized_logistic": a mixture of K discretized logistics per pixel over the
    256 levels of 8-bit images, channels coupled as in PixelCNN++ (`discretized.py`):
    log p(x|z) is a log-probability <= 0, and -log p(x) / (D ln 2) is bits per
    dimension (`objectives.bits_per_dim`).
  A likelihood with batch [k, B] scores images [B, H, W, C] by broadcasting: the k
  samples of z never need a tiled copy of the images.
* mixtures of diagonal Gaussians (the mixture prior, the VampPrior),
  p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)), whose log density takes two matmuls:
  sum_d (z_d - m_kd)^2 / s_kd^2 = z^2 . a_k - 2 z . (m_k a_k) + m_k^2 . a_k with
  a_k = 1 / s_k^2, instead of a broadcast [N, K, D] tensor (a VampPrior with K=500
  evaluates about 4x faster, without GB-sized intermediates). The quadratic form is
  summed in float64 because its terms can be much larger than their difference
  (error < 1e-4 nats; float32 gave up to ~1e-2 with component scales near 0.02).

Parameters are cast to float32 so that the distributions, and hence the loss, stay in
float32 under mixed precision.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import discretized
from tfvae.checks import InputError, check_count, choice

tfd = tfp.distributions

LIKELIHOODS = ("bernoulli", "gaussian", "discretized_logistic")
# Likelihoods of 8-bit levels, whose figures are also given in bits per dimension.
DISCRETIZED = ("discretized_logistic",)
# What log p(x) of each likelihood is: the words reports and metadata.json carry.
FIGURES = {
    "bernoulli": "log-probabilities of binary pixels (nats per image)",
    "gaussian": "log-densities of pixels in [0, 1] (nats per image; a density, not a "
                "probability: it can exceed 1, and its bits/dim assume dequantized "
                "8-bit data)",
    "discretized_logistic": "log-probabilities of the 256 levels of every pixel (nats "
                            "per image; bits/dim = -log p / (D ln 2))",
}


def default_likelihood(pixels, binarization=None):
    """The likelihood of images whose stored pixels are `pixels` ("binary", "8-bit",
    "real" or None: `data.PIXELS`) once binarized as `binarization` ("static",
    "dynamic", or None / "none": as stored): Bernoulli for binary pixels, the
    discretized logistic for 8-bit levels (a probability of each level, in bits/dim),
    the Gaussian density otherwise."""
    if binarization in ("static", "dynamic") or pixels == "binary":
        return "bernoulli"
    return "discretized_logistic" if pixels == "8-bit" else "gaussian"


def check_likelihood(name):
    """Returns `name` if it is a known likelihood, else raises a ValueError."""
    return choice("likelihood", name, LIKELIHOODS)


def is_discretized(likelihood):
    """True for a likelihood of 8-bit levels (figures also in bits per dimension)."""
    return likelihood in DISCRETIZED


def check_components(components):
    """The number of mixture components of a discretized likelihood, 1 to
    `discretized.MAX_COMPONENTS`."""
    return check_count(components, "likelihood_components", discretized.MAX_COMPONENTS)


def params_per_pixel(likelihood, channels=1, components=discretized.DEFAULT_COMPONENTS):
    """Network outputs per pixel of `channels` channels that `likelihood` needs:
    C (Bernoulli logits), 2C (Gaussian loc and raw scale) or K (1 + 2C + C(C-1)/2)
    (a discretized logistic mixture of K components, `discretized.params_per_pixel`)."""
    if check_likelihood(likelihood) == "bernoulli":
        return channels
    if likelihood == "gaussian":
        return 2 * channels
    return discretized.params_per_pixel(channels, check_components(components))


def positive_scale(raw, min_scale):
    """sigma = softplus(raw) + min_scale: finite and >= min_scale for any raw."""
    return tf.math.softplus(raw) + min_scale


def gaussian_posterior(params, min_scale):
    """Diagonal Gaussian over the last axis; `params` is [..., 2 * latent_dim]."""
    params = tf.cast(params, tf.float32)
    loc, raw_scale = tf.split(params, 2, axis=-1)
    return tfd.Independent(
        tfd.Normal(loc=loc, scale=positive_scale(raw_scale, min_scale)),
        reinterpreted_batch_ndims=1,
        name="posterior",
    )


def is_diagonal_gaussian(distribution):
    """Whether `distribution` is a diagonal Gaussian as the heads above build them."""
    return isinstance(distribution, tfd.Independent) and isinstance(
        distribution.distribution, tfd.Normal)


def at_temperature(distribution, draws, temperature):
    """Draws of a diagonal Gaussian moved toward its mean, m + t (z - m): draws of
    the same Gaussian with every scale times t (samples "at temperature t", as NVAE
    and VDVAE show them: t < 1 trades diversity for typical, cleaner images).
    InputError for another distribution (a mixture has no one mean to shrink to)."""
    if isinstance(temperature, (int, float)) and temperature == 1:
        return draws  # (a tensor `temperature`, as the export's, is always applied)
    if not is_diagonal_gaussian(distribution):
        raise InputError(f"a temperature other than 1 needs Gaussian priors; this "
                         f"model's prior is a {type(distribution).__name__}.")
    mean = distribution.mean()
    return mean + temperature * (draws - mean)


class BernoulliLogits(tfd.Bernoulli):
    """Bernoulli with log p(x) = x l - softplus(l) on the logits l (see above)."""

    def _log_prob(self, x):
        logits = self._logits_parameter_no_checks()
        return tf.cast(x, logits.dtype) * logits - tf.math.softplus(logits)


class DiagonalGaussianMixture(tfd.MixtureSameFamily):
    """sum_k pi_k N(z; m_k, diag(s_k^2)) whose `log_prob` takes two matmuls.

    Build it with `gaussian_mixture`; sampling, shapes and the rest are
    `tfd.MixtureSameFamily`'s.
    """

    def _log_prob(self, z):
        normal = self.components_distribution.distribution
        shape = tf.broadcast_dynamic_shape(tf.shape(normal.loc), tf.shape(normal.scale))
        loc = tf.broadcast_to(normal.loc, shape)
        scale = tf.broadcast_to(normal.scale, shape)  # [K, D]
        precision = tf.cast(1.0 / tf.square(scale), tf.float64)
        loc64 = tf.cast(loc, tf.float64)
        flat = tf.cast(tf.reshape(z, [-1, tf.shape(z)[-1]]), tf.float64)  # [N, D]
        quadratic = (tf.matmul(tf.square(flat), precision, transpose_b=True)
                     - 2.0 * tf.matmul(flat, loc64 * precision, transpose_b=True)
                     + tf.reduce_sum(tf.square(loc64) * precision, axis=-1))  # [N, K]
        dim = tf.cast(tf.shape(loc)[-1], tf.float32)
        log_components = (-0.5 * tf.cast(quadratic, tf.float32)
                          - tf.reduce_sum(tf.math.log(scale), axis=-1)
                          - 0.5 * dim * math.log(2.0 * math.pi))
        log_mix = tf.nn.log_softmax(self.mixture_distribution.logits_parameter())
        log_p = tf.reduce_logsumexp(log_mix + log_components, axis=-1)
        return tf.reshape(log_p, tf.shape(z)[:-1])


def gaussian_mixture(logits, components, name="prior"):
    """A `DiagonalGaussianMixture` of `components` (Independent Normal, batch [K])
    weighted by softmax(`logits`) [K]."""
    return DiagonalGaussianMixture(tfd.Categorical(logits=logits), components, name=name)


class ImageLikelihood(tfd.Independent):
    """Independent pixels, event [H, W, C], whose log-probability is summed over the
    pixels flattened to one axis [..., H * W * C]: XLA on a CPU sums such a row about
    11% faster than [..., H, W, C] with C = 1 (measured on the k=5000 NLL)."""

    def _log_prob(self, x):
        pixels = self.distribution
        if isinstance(pixels, BernoulliLogits):
            flat = BernoulliLogits(logits=_flat(pixels.logits), dtype=pixels.dtype)
        else:
            flat = tfd.Normal(loc=_flat(pixels.loc), scale=_flat(pixels.scale))
        return tf.reduce_sum(flat.log_prob(_flat(tf.cast(x, self.dtype))), axis=-1)


def _flat(tensor):
    """[..., H, W, C] -> [..., H * W * C]."""
    return tf.reshape(tensor, tf.concat([tf.shape(tensor)[:-3], [-1]], axis=0))


def image_likelihood(likelihood, params, min_scale, channels=None):
    """Likelihood p(x|z) over images from `params` of shape [B, H, W, P].

    P is `params_per_pixel(likelihood, C, K)`; the result has event shape [H, W, C].
    A discretized likelihood needs the image's `channels` C (K follows from P); the
    others read C from P. `min_scale` floors the Gaussian's scale (the discretized
    logistic has its own floor, `discretized.MIN_SCALE`).
    """
    params = tf.cast(params, tf.float32)
    if check_likelihood(likelihood) == "discretized_logistic":
        if channels is None:
            raise ValueError("The discretized likelihood needs the images' channels.")
        return discretized.DiscretizedLogisticMixture.from_params(params, channels)
    if likelihood == "bernoulli":
        pixels = BernoulliLogits(logits=params, dtype=tf.float32)
    else:
        loc, raw_scale = tf.split(params, 2, axis=-1)
        pixels = tfd.Normal(loc=loc, scale=positive_scale(raw_scale, min_scale))
    return ImageLikelihood(pixels, reinterpreted_batch_ndims=3, name="likelihood")


def likelihood_parameters(likelihood):
    """The named tensor parameters of a likelihood made by `image_likelihood`.

    {"logits"} for Bernoulli, {"loc", "scale"} for Gaussian: what the `decode`
    signature of an exported model returns next to the mean image. A likelihood
    of another kind names its own (`decoded_parameters`; the autoregressive one of
    `pixelcnn.py` gives the logits along the path of its mean; the discretized
    logistic mixture "mixture_logits", "loc", "scale" and for colour images
    "coefficients", `discretized.DiscretizedLogisticMixture.decoded_parameters`).
    """
    if hasattr(likelihood, "decoded_parameters"):
        return likelihood.decoded_parameters()
    pixels = likelihood.distribution
    if isinstance(pixels, tfd.Bernoulli):
        return {"logits": pixels.logits_parameter()}
    return {"loc": pixels.loc, "scale": pixels.scale}
