"""Posterior heads: Keras layers mapping features to q(z|.) over a `latent_dim`-vector.

A body (MLP, conv, a top-down block) computes features h; a head turns them into a
distribution, so that any body takes any head and a new posterior is one new head.
Every head also names the code a person looks at (`code`): the point of z that
`reconstruct`, `encode` and the figures use.

* `GaussianPosterior`: q(z|h) = N(mu(h), diag(sigma(h)^2)) (see `distributions.py`);
  its code is the mean mu.
* `IAFPosterior` (Kingma et al. 2016, "Improved variational inference with inverse
  autoregressive flow"): z_0 = mu + sigma * eps, then T steps
      z_t = m_t(z_{t-1}, c) + exp(s_t(z_{t-1}, c)) * z_{t-1},
  where (m_t, s_t) come from a MADE network (Germain et al. 2015) that is
  autoregressive in z (output i sees inputs < i in the step's order) and sees the
  context c = c(h) everywhere. The Jacobian of each step is triangular, so
      log q(z_T|h) = log N(z_0; mu, sigma^2) - sum_t sum_i s_t,i.
  The order of z is reversed between steps. The output layers start at zero, so a
  fresh flow is the identity and q equals the Gaussian it wraps. Scores of a given z
  (DReG's path term, a hierarchy scoring given codes) invert the steps exactly with D
  fixed-point sweeps, z_{t-1} <- (z_t - m_t(z_{t-1})) exp(-s_t(z_{t-1})): after sweep j
  the first j coordinates are exact. log s is soft-clipped to (-3, 3) for stability.
  No closed-form KL exists, so the rate is sampled. The code is the flow's image of
  the base mean, f(mu).

A head is a part handed to the encoder or to a top-down block (`head=`), which then
knows nothing of posterior options; `resolve` builds the default Gaussian head, reads
a serialized one from a `.keras` file, and the flat options (`posterior`,
`flow_steps`, `flow_hidden_units`) that files written before 0.2 carry. A head says
what it is: `kind` (its name in `POSTERIORS` and metadata) and `diagonal_gaussian`
(its posterior is a diagonal Gaussian, as a VampPrior's mixture needs).
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import distributions
from tfvae.checks import check_count, choice

tfd = tfp.distributions

POSTERIORS = ("gaussian", "iaf")
_LOG_SCALE_BOUND = 3.0



@keras.saving.register_keras_serializable(package="tfvae")
class GaussianPosterior(keras.layers.Layer):
    """q(z|h) = N(mu, diag(sigma^2)) from Dense(2 * latent_dim) on the features h.

    Call: features [..., F] -> `tfd.Independent(Normal)`, event [latent_dim].
    """

    kind = "gaussian"
    diagonal_gaussian = True

    def __init__(self, latent_dim, min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.min_scale = float(min_scale)
        self.params = keras.layers.Dense(2 * self.latent_dim, name="posterior_params")

    def build(self, input_shape):
        self.params.build(tuple(input_shape))

    def call(self, features):
        return distributions.gaussian_posterior(self.params(features), self.min_scale)

    @staticmethod
    def code(posterior):
        return posterior.mean()

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "min_scale": self.min_scale}


def made_masks(latent_dim, hidden_units):
    """MADE masks (input -> hidden, hidden -> output) for the identity order.

    Hidden unit j has degree 1 + j mod (D - 1) (in 1..D-1); it sees inputs of degree
    <= its own, and output i (degree i + 1) sees hidden units of degree < i + 1, so
    output i depends on inputs 0..i-1 only. D = 1 has no autoregressive inputs.
    """
    d = latent_dim
    inputs = np.arange(1, d + 1)
    hidden = 1 + np.arange(hidden_units) % max(d - 1, 1)
    to_hidden = (inputs[:, None] <= hidden[None, :]).astype("float32")
    to_output = (hidden[:, None] < inputs[None, :]).astype("float32")
    if d == 1:
        to_hidden[:] = 0.0
    return to_hidden, to_output


@keras.saving.register_keras_serializable(package="tfvae")
class MADE(keras.layers.Layer):
    """(m, s) [..., D] each = autoregressive network of z [..., D] and context c."""

    def __init__(self, latent_dim, hidden_units=256, activation="elu", **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.hidden_units = check_count(hidden_units, "flow_hidden_units")
        self.activation = activation

    def build(self, input_shape):
        z_shape, context_shape = input_shape
        d, h = self.latent_dim, self.hidden_units
        self.z_kernel = self.add_weight(shape=(d, h), name="z_kernel",
                                        initializer="glorot_uniform")
        self.context_kernel = self.add_weight(shape=(context_shape[-1], h),
                                              name="context_kernel",
                                              initializer="glorot_uniform")
        self.hidden_bias = self.add_weight(shape=(h,), name="hidden_bias",
                                           initializer="zeros")
        # Zero output layers: a fresh step is the identity (m = 0, s = 0).
        self.out_kernel = self.add_weight(shape=(h, 2 * d), name="out_kernel",
                                          initializer="zeros")
        self.out_bias = self.add_weight(shape=(2 * d,), name="out_bias",
                                        initializer="zeros")
        to_hidden, to_output = made_masks(d, h)
        self.to_hidden = tf.constant(to_hidden)
        self.to_output = tf.constant(np.concatenate([to_output, to_output], axis=1))

    def call(self, z, context):
        to_hidden, to_output = (tf.cast(m, self.compute_dtype)
                                for m in (self.to_hidden, self.to_output))
        hidden = (tf.matmul(z, self.z_kernel * to_hidden)
                  + tf.matmul(context, self.context_kernel) + self.hidden_bias)
        hidden = keras.activations.get(self.activation)(hidden)
        out = tf.matmul(hidden, self.out_kernel * to_output) + self.out_bias
        # The flow's arithmetic (and log q) stays float32 under mixed precision.
        shift, raw_log_scale = tf.split(tf.cast(out, tf.float32), 2, axis=-1)
        log_scale = _LOG_SCALE_BOUND * tf.tanh(raw_log_scale / _LOG_SCALE_BOUND)
        return shift, log_scale

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units, "activation": self.activation}


class IAFDistribution(tfd.Distribution):
    """The density of z_T for the flow of `IAFPosterior` (see the module docstring).

    Args:
        base: the Gaussian q(z_0|h), batch [...], event [D].
        steps: the MADE layers, applied in turn.
        context: c [..., C], broadcastable against the base's batch shape.
    """

    def __init__(self, base, steps, context, name="iaf_posterior"):
        parameters = dict(locals())
        self._base, self._steps, self._context = base, tuple(steps), context
        super().__init__(dtype=base.dtype, validate_args=False, allow_nan_stats=True,
                         reparameterization_type=tfd.FULLY_REPARAMETERIZED,
                         parameters=parameters, name=name)

    @property
    def base_distribution(self):
        """The Gaussian q(z_0|h) the flow starts from."""
        return self._base

    def _context_for(self, z):
        return tf.broadcast_to(self._context, tf.concat(
            [tf.shape(z)[:-1], tf.shape(self._context)[-1:]], axis=0))

    def forward(self, z0):
        """z_0 -> (z_T, sum_t sum_i s_t,i)."""
        z, log_det = z0, tf.zeros(tf.shape(z0)[:-1], z0.dtype)
        context = self._context_for(z0)
        for step in self._steps:
            shift, log_scale = step(z, context)
            z = tf.reverse(shift + tf.exp(log_scale) * z, axis=[-1])
            log_det += tf.reduce_sum(log_scale, axis=-1)
        return z, log_det

    def inverse(self, z):
        """z_T -> (z_0, sum_t sum_i s_t,i), exact after D sweeps per step."""
        log_det = tf.zeros(tf.shape(z)[:-1], z.dtype)
        context = self._context_for(z)
        for step in reversed(self._steps):
            target = tf.reverse(z, axis=[-1])

            def sweep(i, x, target=target, step=step):
                shift, log_scale = step(x, context)
                return i + 1, (target - shift) * tf.exp(-log_scale)

            # A static trip count lets XLA differentiate through the loop.
            _, z = tf.while_loop(lambda i, _: i < z.shape[-1], sweep,
                                 (tf.constant(0), tf.zeros_like(target)),
                                 maximum_iterations=z.shape[-1])
            log_det += tf.reduce_sum(step(z, context)[1], axis=-1)
        return z, log_det

    def _batch_shape(self):
        return self._base.batch_shape

    def _batch_shape_tensor(self):
        return self._base.batch_shape_tensor()

    def _event_shape(self):
        return self._base.event_shape

    def _event_shape_tensor(self):
        return self._base.event_shape_tensor()

    def _sample_n(self, n, seed=None):
        return self.forward(self._base.sample(n, seed=seed))[0]

    def _sample_and_log_prob(self, sample_shape, seed=None):
        z0 = self._base.sample(sample_shape, seed=seed)
        z, log_det = self.forward(z0)
        return z, self._base.log_prob(z0) - log_det

    def _log_prob(self, z):
        z0, log_det = self.inverse(z)
        return self._base.log_prob(z0) - log_det

    def code(self):
        """The flow's image of the base mean."""
        return self.forward(self._base.mean())[0]

    @classmethod
    def _parameter_properties(cls, dtype, num_classes=None):
        return {}


@keras.saving.register_keras_serializable(package="tfvae")
class IAFPosterior(keras.layers.Layer):
    """Gaussian q(z_0|h) followed by `flow_steps` inverse autoregressive steps.

    Args:
        latent_dim: size of z.
        flow_steps: T, the number of autoregressive steps.
        flow_hidden_units: hidden units of each step's MADE network.
        context_dim: size of the context c(h) that every step sees.
        min_scale: floor on the base Gaussian's standard deviation.

    Call: features [..., F] -> `IAFDistribution`, event [latent_dim].
    """

    kind = "iaf"
    diagonal_gaussian = False

    def __init__(self, latent_dim, flow_steps=2, flow_hidden_units=256, context_dim=64,
                 min_scale=1e-4, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.flow_steps = check_count(flow_steps, "flow_steps")
        self.flow_hidden_units = check_count(flow_hidden_units, "flow_hidden_units")
        self.context_dim = check_count(context_dim, "context_dim")
        self.min_scale = float(min_scale)
        self.params = keras.layers.Dense(2 * self.latent_dim, name="posterior_params")
        self.context = keras.layers.Dense(self.context_dim, activation="elu",
                                          name="context")
        self.steps = [MADE(self.latent_dim, self.flow_hidden_units, name=f"made_{t}")
                      for t in range(self.flow_steps)]

    def build(self, input_shape):
        self.params.build(tuple(input_shape))
        self.context.build(tuple(input_shape))
        for step in self.steps:
            step.build(((None, self.latent_dim), (None, self.context_dim)))

    def call(self, features):
        base = distributions.gaussian_posterior(self.params(features), self.min_scale)
        context = tf.cast(self.context(features), tf.float32)
        return IAFDistribution(base, self.steps, context)

    @staticmethod
    def code(posterior):
        return posterior.code()

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "flow_steps": self.flow_steps,
                "flow_hidden_units": self.flow_hidden_units,
                "context_dim": self.context_dim, "min_scale": self.min_scale}


def posterior_head(latent_dim, posterior="gaussian", min_scale=1e-4, flow_steps=2,
                   flow_hidden_units=256, name="head"):
    """The head layer for a `posterior` name in `POSTERIORS`."""
    if choice("posterior", posterior, POSTERIORS) == "gaussian":
        return GaussianPosterior(latent_dim, min_scale, name=name)
    return IAFPosterior(latent_dim, flow_steps, flow_hidden_units, min_scale=min_scale,
                        name=name)


# The posterior options of encoders and top-down blocks in files written before 0.2.
LEGACY_OPTIONS = ("posterior", "flow_steps", "flow_hidden_units")


def pop_legacy_options(layer_kwargs):
    """Remove and return the flat head options of an older file's layer config."""
    return {name: layer_kwargs.pop(name) for name in LEGACY_OPTIONS
            if name in layer_kwargs}


def serialize(head):
    """A body's config of its head: without the head's build shapes, because the body
    builds its head, under the body's name (so that a model from a file has the weight
    paths of a fresh one: warm starts match weights by path)."""
    return _without_build_shapes(keras.saving.serialize_keras_object(head))


def _without_build_shapes(config):
    return {key: value for key, value in config.items() if key != "build_config"}


def resolve(head, latent_dim, min_scale=1e-4, name="head", **legacy):
    """The posterior head of a body over a `latent_dim`-vector: `head` itself (a head
    layer, or its serialized config from a `.keras` file), else the Gaussian, or the
    head an older file's flat options name (`legacy`)."""
    if head is None:
        return posterior_head(latent_dim, min_scale=min_scale, name=name, **legacy)
    if isinstance(head, dict):  # built by its body (`serialize`; older files had shapes)
        head = keras.saving.deserialize_keras_object(_without_build_shapes(head))
    if getattr(head, "latent_dim", None) != latent_dim:
        raise ValueError(f"The posterior head is over {getattr(head, 'latent_dim', '?')} "
                         f"dimensions, its body's latent_dim is {latent_dim}.")
    return head


def is_diagonal_gaussian(dist):
    return (isinstance(dist, tfd.Independent)
            and isinstance(dist.distribution, tfd.Normal))
