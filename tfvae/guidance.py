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
as it is.

The image is guided too, with its own weight v >= 0 (0: the decoder's mean given y):
on the guided codes the decoder gives the means x_y of p(x | z, y) and x_0 of
p(x | z), and the image is x_y + v (x_y - x_0), clipped to the data's range ([0, 1];
a Gaussian's real values as they are), the same extrapolation at the last layer (for
a Gaussian p(x|z) of one scale, exactly the mean of p(x|z,y)^(1+v) / p(x|z)^v). A
draw x ~ p(x | z, y) moves by the same v (x_y - x_0) (and, for 8-bit levels, back to
the nearest level): the label's effect on the rendering itself, where the codes'
guidance acts on what is drawn.
"""

import tensorflow as tf

from tfvae import discretized, distributions
from tfvae.checks import InputError, check_guidance_value


def check_guidance(model, weight, name="guidance"):
    """(w of the codes, v of the image), floats >= 0, of `weight`: one number (w, 0) or
    a pair; InputError where the model cannot be guided."""
    weights = check_guidance_value(weight, name)
    if any(weights) and not getattr(model, "context_dropout", 0):
        raise InputError("guidance needs a class-conditional model trained with "
                         "--context_dropout > 0 (it learns p(z) beside p(z|y)); this "
                         "one was not.")
    return weights


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


def guided_likelihood(model, count, context, temperatures, weight, image_weight=0.0):
    """(the guided images' `GuidedLikelihood` [count, ...], codes z [count, D]) of
    `model` given the contexts [count, C], the codes drawn with guidance weight
    `weight` at per-layer `temperatures`, the image guided by `image_weight`
    (numbers or tensors)."""
    both = tf.concat([context, tf.zeros_like(context)], 0)

    def choose(index, posterior, prior):
        return guided_draw(prior, weight, temperatures[index], count), None

    layers, inputs = model.walk(None, choose, both)
    codes = tf.concat([layer["z"][:count] for layer in layers], axis=-1)
    likelihood = model.decoder(inputs, training=False)
    return GuidedLikelihood(likelihood, image_weight, model.decoder.likelihood), codes


class GuidedLikelihood:
    """What sampling reads of the guided image distribution: `mean()`, x_y + v (x_y -
    x_0), and `sample()`, a draw of p(x | z, y) moved alike, both in the data's range
    (a draw of 8-bit levels back on a level), from the decoder's likelihood over both
    halves [2 count, ...] (the conditional rows first)."""

    def __init__(self, likelihood, image_weight, kind):
        self.likelihood, self.kind = likelihood, kind
        given, null = tf.split(likelihood.mean(), 2)
        self.given, self.shift = given, image_weight * (given - null)

    def mean(self):
        return self._in_range(self.given + self.shift)

    def sample(self):
        drawn = tf.split(self.likelihood.sample(), 2)[0] + self.shift
        if distributions.is_discretized(self.kind):
            return discretized.nearest_level(drawn)
        return self._in_range(drawn)

    def _in_range(self, images):
        """Clipped to [0, 1], the range of binary and 8-bit data; a Gaussian
        likelihood's real values as they are."""
        return images if self.kind == "gaussian" else tf.clip_by_value(images, 0.0, 1.0)
