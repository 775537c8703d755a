"""Classifier-free guidance (Ho & Salimans 2022) for a class-conditional VAE.

A model trained with `context_dropout` > 0 has seen some rows without their label
(the null context, zeros), so one network gives both p(z_l | z_>l, y) and
p(z_l | z_>l). Guided sampling walks the hierarchy top-down with both contexts side
by side, on the same codes z_>l, and draws each layer from the Gaussian

    N(m_y + w (m_y - m_0),  (t s_y)^2),

m_y, s_y the conditional prior's mean and scale, m_0 the unconditional mean, w >= 0
the guidance weight and t the layer's temperature. When both priors share the scale
s, p(z|y)^(1+w) / p(z)^w is exactly this Gaussian, and p(z|y) / p(z) is p(y|z) / p(y):
the draws lean toward codes the model itself finds typical of y (its implicit
classifier, raised to the power w), at the cost of variety. w = 0 samples the model
as it is. The image is the decoder's mean given y and the guided codes.
"""

import tensorflow as tf

from tfvae import distributions
from tfvae.checks import InputError, check_guidance_value


def check_guidance(model, weight, name="guidance"):
    """`weight` as a float >= 0; InputError where the model cannot be guided."""
    weight = check_guidance_value(weight, name)
    if weight and not getattr(model, "context_dropout", 0):
        raise InputError("guidance needs a class-conditional model trained with "
                         "--context_dropout > 0 (it learns p(z) beside p(z|y)); this "
                         "one was not.")
    return weight


def guided_draw(prior, weight, temperature, count):
    """`count` draws [count, D] from a prior over both halves of the batch, the
    conditional rows first: mean m_y + w (m_y - m_0), scale t s_y (see above);
    repeated for both halves so that both walk on from the same codes."""
    if not distributions.is_diagonal_gaussian(prior):
        raise InputError(f"guidance needs Gaussian priors; this model's is a "
                         f"{type(prior).__name__}.")
    mean, scale = prior.mean(), prior.stddev()
    shape = tf.concat([[2 * count], tf.shape(mean)[-1:]], 0)
    conditional, null = tf.split(tf.broadcast_to(mean, shape), 2)
    scale = tf.broadcast_to(scale, shape)[:count]
    z = conditional + weight * (conditional - null) + temperature * scale * \
        tf.random.normal(tf.shape(conditional))
    return tf.concat([z, z], 0)


def guided_likelihood(model, count, context, temperatures, weight):
    """(p(x | z, y) [count, ...], codes z [count, D]) of `model` given the contexts
    [count, C], the codes drawn with guidance weight `weight` at per-layer
    `temperatures` (numbers or tensors)."""
    both = tf.concat([context, tf.zeros_like(context)], 0)

    def choose(index, posterior, prior):
        return guided_draw(prior, weight, temperatures[index], count), None

    layers, inputs = model.walk(None, choose, both)
    codes = tf.concat([layer["z"][:count] for layer in layers], axis=-1)
    return model.decoder(inputs[:count], training=False), codes
