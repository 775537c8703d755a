"""Priors p(z): small Keras layers whose `call` returns a distribution over z.

* StandardNormalPrior: p(z) = N(0, I). KL(q || p) has a closed form.
* MixturePrior: p(z) = sum_k pi_k N(z; m_k, diag(s_k^2)) with learnable pi, m, s
  (a "mixture of Gaussians" prior). No closed-form KL: the model estimates it by
  Monte Carlo, KL ~= mean_l [log q(z_l|x) - log p(z_l)], z_l ~ q(z|x).
* VampPrior (Tomczak & Welling 2018): p(z) = 1/K sum_k q(z | u_k), the encoder's
  posterior at K learnable pseudo-inputs u_k (kept in [0, 1] by a sigmoid).
  It needs the encoder, so every prior's `call` takes it as a keyword argument.
* ConditionalPrior (Sohn et al. 2015): p(z|c) = N(m(c), diag(s(c)^2)), m and s affine
  in the context c; for a one-hot label that is a learned Gaussian per class. The
  KL to a Gaussian posterior keeps its closed form.

Every prior is called as `prior(encoder=encoder)` and returns a distribution with
batch shape [] and event shape [latent_dim]; a conditional one (`conditional` True)
is called as `prior(encoder=encoder, context=c)` with c [B, C] and has batch [B].
Priors compute in float32 whatever the global mixed-precision policy: their weights
are few and their densities enter the loss.

A prior says what it is, so that the model and the export never ask for its class:
`conditional` (it takes the context), `uses_encoder` (it is built from the encoder's
posteriors, as the VampPrior: it needs a Gaussian posterior on top, and no context),
and `mixture_parameters(p)`, the way it exports: p(z) as a mixture of K diagonal
Gaussians (logits [K], loc [K, D], scale [K, D]) that `sample` draws from with
TFLite's built-in ops.
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.checks import check_count
from tfvae.distributions import gaussian_mixture

tfd = tfp.distributions


def float32(layer_kwargs):
    """Layer keyword arguments with the float32 policy unless another is given."""
    return {"dtype": "float32", **layer_kwargs}


def mixture_parameters(prior):
    """A prior distribution, a diagonal Gaussian or a mixture of them, as (logits [K],
    loc [K, D], scale [K, D]); K = 1 for a Gaussian."""
    if isinstance(prior, tfd.MixtureSameFamily):
        logits = prior.mixture_distribution.logits_parameter()
        loc, scale = diagonal_normal(prior.components_distribution)
        return logits, loc, scale
    loc, scale = diagonal_normal(prior)
    return tf.zeros([1]), loc[None], scale[None]


def diagonal_normal(dist):
    normal = dist.distribution if isinstance(dist, tfd.Independent) else dist
    if not isinstance(normal, tfd.Normal):
        raise NotImplementedError(
            f"Export supports priors that are diagonal Gaussians or mixtures of them, "
            f"got {dist.name} ({type(normal).__name__}).")
    loc = tf.convert_to_tensor(normal.loc)
    scale = tf.convert_to_tensor(normal.scale)
    return loc + tf.zeros_like(scale), scale + tf.zeros_like(loc)


class Prior(keras.layers.Layer):
    """What every prior declares (see the module docstring); priors compute in float32."""

    conditional = False
    uses_encoder = False
    gaussian = False  # a diagonal Gaussian, which sampling can cool (`at_temperature`)

    def __init__(self, **kwargs):
        super().__init__(**float32(kwargs))

    @staticmethod
    def mixture_parameters(prior):
        """The prior's distribution as a diagonal Gaussian mixture, for the export."""
        return mixture_parameters(prior)


@keras.saving.register_keras_serializable(package="tfvae")
class ConditionalPrior(Prior):
    """p(z|c): a diagonal Gaussian whose mean and log-scale are affine in c [B, C].

    Starts as N(0, I) for every c (zero weights), so training begins from the
    standard normal prior.
    """

    conditional = True
    gaussian = True

    def __init__(self, latent_dim, context_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.context_dim = check_count(context_dim, "context_dim")
        self.min_scale = float(min_scale)
        self.params = keras.layers.Dense(2 * self.latent_dim, kernel_initializer="zeros",
                                         dtype=self.dtype_policy,
                                         name="params")

    def build(self, input_shape=None):
        self.params.build((None, self.context_dim))

    def call(self, encoder=None, context=None):
        if context is None:
            raise ValueError("ConditionalPrior needs the context: call it as "
                             "prior(encoder=..., context=c).")
        params = tf.cast(self.params(tf.cast(context, tf.float32)), tf.float32)
        loc, raw_scale = tf.split(params, 2, axis=-1)
        # softplus(x + 0.5413) = 1 at x = 0: unit scale at initialisation.
        scale = tf.math.softplus(raw_scale + 0.5413) + self.min_scale
        return tfd.Independent(tfd.Normal(loc, scale), 1, name="prior")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "context_dim": self.context_dim, "min_scale": self.min_scale}


@keras.saving.register_keras_serializable(package="tfvae")
class StandardNormalPrior(Prior):
    """p(z) = N(0, I) over a `latent_dim`-vector. Owns no weights."""

    gaussian = True

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")

    def build(self, input_shape=None):
        pass

    def call(self, encoder=None):
        zeros = tf.zeros([self.latent_dim], tf.float32)
        return tfd.Independent(tfd.Normal(zeros, 1.0), 1, name="prior")

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}


@keras.saving.register_keras_serializable(package="tfvae")
class MixturePrior(Prior):
    """Learnable mixture of `num_components` diagonal Gaussians.

    Means start spread as N(0, 1) draws and scales at 1, so at initialisation the
    prior is a broad, multi-modal cover of the standard normal's mass.
    """

    def __init__(self, latent_dim, num_components=10, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.num_components = check_count(num_components, "num_components")

    def build(self, input_shape=None):
        shape = (self.num_components, self.latent_dim)
        self.logits = self.add_weight(shape=(self.num_components,), initializer="zeros",
                                      name="logits")
        self.locs = self.add_weight(shape=shape, name="locs",
                                    initializer=keras.initializers.RandomNormal(0.0, 1.0))
        # softplus(0.5413) = 1.0
        self.raw_scales = self.add_weight(
            shape=shape, name="raw_scales",
            initializer=keras.initializers.Constant(0.5413))

    def call(self, encoder=None):
        components = tfd.Independent(
            tfd.Normal(self.locs, tf.math.softplus(self.raw_scales) + 1e-4), 1)
        return gaussian_mixture(self.logits, components)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "num_components": self.num_components}


@keras.saving.register_keras_serializable(package="tfvae")
class VampPrior(Prior):
    """VampPrior: p(z) = 1/K sum_k q(z | u_k) with K learnable pseudo-inputs u_k.

    Args:
        image_shape: shape (H, W, C) of the pseudo-inputs: the encoder's input.
        num_pseudo_inputs: K (500 in the paper's MNIST experiments).
    """

    uses_encoder = True

    def __init__(self, image_shape, num_pseudo_inputs=500, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = tuple(int(d) for d in image_shape)
        self.num_pseudo_inputs = check_count(num_pseudo_inputs, "num_pseudo_inputs")

    def build(self, input_shape=None):
        # Pseudo-inputs start near the middle grey with small noise (sigmoid of ~0).
        self.raw_pseudo_inputs = self.add_weight(
            shape=(self.num_pseudo_inputs, *self.image_shape), name="raw_pseudo_inputs",
            initializer=keras.initializers.RandomNormal(0.0, 0.01))

    def pseudo_inputs(self):
        return tf.sigmoid(self.raw_pseudo_inputs)

    def call(self, encoder=None):
        if encoder is None:
            raise ValueError("VampPrior needs the encoder: call it as prior(encoder=...).")
        components = encoder(self.pseudo_inputs())
        return gaussian_mixture(tf.zeros([self.num_pseudo_inputs], tf.float32),
                                components)

    def get_config(self):
        return {**super().get_config(), "image_shape": self.image_shape,
                "num_pseudo_inputs": self.num_pseudo_inputs}
