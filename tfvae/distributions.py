"""Distribution heads: network outputs -> `tfp.distributions` objects.

A head turns an unconstrained tensor of parameters into a distribution:

* posterior q(z|x) = N(z; mu, diag(sigma^2)), with sigma = softplus(s) + sigma_min.
  softplus keeps sigma finite for large |s| (no exp overflow) and sigma_min keeps
  log sigma bounded below, so log q(z|x) never becomes NaN.
* likelihood p(x|z) over a whole image (event shape [H, W, C]):
  - "bernoulli": p(x|z) = prod_i Ber(x_i; sigmoid(l_i)), parameterised by logits l
    (numerically exact log-probabilities, no clipping of sigmoid outputs);
  - "gaussian":  p(x|z) = prod_i N(x_i; mu_i, sigma_i^2), sigma_i = softplus + floor.

Parameters are cast to float32 so that the distributions, and hence the loss, stay in
float32 under mixed precision.
"""

import tensorflow as tf
import tensorflow_probability as tfp

tfd = tfp.distributions

LIKELIHOODS = ("bernoulli", "gaussian")

# Number of network outputs per pixel that each likelihood needs.
_PARAMS_PER_PIXEL = {"bernoulli": 1, "gaussian": 2}


def check_likelihood(name):
    """Returns `name` if it is a known likelihood, else raises a ValueError."""
    if name not in _PARAMS_PER_PIXEL:
        raise ValueError(
            f"Unknown likelihood {name!r}; expected one of {', '.join(LIKELIHOODS)}."
        )
    return name


def params_per_pixel(likelihood):
    return _PARAMS_PER_PIXEL[check_likelihood(likelihood)]


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


def image_likelihood(likelihood, params, min_scale):
    """Likelihood p(x|z) over images from `params` of shape [B, H, W, C * k].

    k is `params_per_pixel(likelihood)`; the result has event shape [H, W, C].
    """
    params = tf.cast(params, tf.float32)
    if check_likelihood(likelihood) == "bernoulli":
        pixels = tfd.Bernoulli(logits=params, dtype=tf.float32)
    else:
        loc, raw_scale = tf.split(params, 2, axis=-1)
        pixels = tfd.Normal(loc=loc, scale=positive_scale(raw_scale, min_scale))
    return tfd.Independent(pixels, reinterpreted_batch_ndims=3, name="likelihood")


def likelihood_parameters(likelihood):
    """The named tensor parameters of a likelihood made by `image_likelihood`.

    {"logits"} for Bernoulli, {"loc", "scale"} for Gaussian: what the `decode`
    signature of an exported model returns next to the mean image.
    """
    pixels = likelihood.distribution
    if isinstance(pixels, tfd.Bernoulli):
        return {"logits": pixels.logits_parameter()}
    return {"loc": pixels.loc, "scale": pixels.scale}
