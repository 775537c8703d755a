"""Top-down blocks: the stochastic layers below the top of a hierarchical VAE.

Generative model with L stochastic layers (Sønderby et al. 2016, "Ladder variational
autoencoders"; the top-down cell of Kingma et al. 2016, NVAE, VDVAE):

    p(x, z) = p(z_L) prod_{l<L} p(z_l | z_{>l}) p(x | z_1, h_1),

and inference in the same top-down order, sharing the deterministic top-down state
h_l (a function of z_{>l}) between prior and posterior:

    h_l = f_l([z_{l+1}, h_{l+1}])                  (h_L is empty)
    p(z_l | z_{>l})    = N(mu_p(h_l), sigma_p(h_l)^2)
    q(z_l | z_{>l}, x) = head_q(g_l([h_l, d_l]))   (a Gaussian or IAF head)

where d_l are bottom-up features of x from the encoder's body (the layers below its
top, read from the top down). The top layer's posterior is the encoder's own head and
its prior is any tfvae prior (standard normal, mixture, VampPrior). The decoder sees
[z_1, h_1], so every layer reaches the image (the skip connection of Tomczak &
Welling's two-level model p(x | z_1, z_2)).

The rate splits by layer: KL(q(z|x) || p(z)) = sum_l E_q[KL(q(z_l|.) || p(z_l|.))],
each term in closed form given the sampled z_{>l} (both diagonal Gaussians), or
sampled for an IAF posterior.
"""

import math

import keras
import tensorflow as tf

from tfvae import heads
from tfvae.conditioning import concat, join
from tfvae.networks import dense_stack


def flat_features(features):
    """Bottom-up features [B, ...] -> [B, F] (conv feature maps are flattened)."""
    if features.shape.rank > 2:
        return tf.reshape(features, [-1, features.shape[1:].num_elements()])
    return features


@keras.saving.register_keras_serializable(package="tfvae")
class TopDownBlock(keras.layers.Layer):
    """One stochastic layer l < L: the shared state h_l, p(z_l | z_{>l}), q(z_l | ., x).

    Args:
        latent_dim: size of z_l.
        hidden_units: Dense layers of f_l (the top-down state) and of g_l (the
            posterior's merge of h_l with the bottom-up features d_l).
        activation: their activation.
        min_scale: floor on the standard deviations.
        posterior_head: the head of q(z_l | .) (a layer of `heads.py` over latent_dim;
            default: Gaussian).

    `state(z, h, c)` maps [z_{l+1}, h_{l+1}, c] [..., A] to h_l [..., H] (h_{l+1} is
    None under the top, c None for an unconditional model);
    `prior_distribution(h)` and `posterior_distribution(h, d)` return the two
    distributions over z_l; `decoder_input(z, h, c)` is what the decoder reads under
    the lowest block, [z_1, h_1, c].
    """

    def __init__(self, latent_dim, hidden_units=(300, 300), activation="relu",
                 min_scale=1e-4, posterior_head=None, **kwargs):
        legacy = heads.pop_legacy_options(kwargs)
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        if self.latent_dim < 1 or not hidden_units:
            raise ValueError(f"A top-down block needs latent_dim >= 1 and hidden units, "
                             f"got {latent_dim!r} and {hidden_units!r}.")
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.min_scale = float(min_scale)
        self.state_net = dense_stack(self.hidden_units, activation, "state")
        self.merge_net = dense_stack(self.hidden_units, activation, "merge")
        self.prior_head = heads.GaussianPosterior(self.latent_dim, self.min_scale,
                                                  name="prior_head")
        self.posterior_head = heads.resolve(posterior_head, self.latent_dim,
                                            self.min_scale, "posterior_head", **legacy)

    @property
    def state_dim(self):
        return self.hidden_units[-1]

    def build(self, input_shape):
        """input_shape: (shape of [z_{l+1}, h_{l+1}, c], shape of d_l)."""
        above, features = (tuple(s) for s in input_shape)
        features = (None, math.prod(features[1:]))
        shape = above
        for layer in self.state_net:
            layer.build(shape)
            shape = (None, layer.units)
        self.prior_head.build(shape)
        shape = (None, self.state_dim + features[-1])
        for layer in self.merge_net:
            layer.build(shape)
            shape = (None, layer.units)
        if not self.posterior_head.built:
            self.posterior_head.build(shape)

    def state(self, z, state, context=None):
        h = join(z if state is None else concat([z, state]), context)
        for layer in self.state_net:
            h = layer(h)
        return h

    def prior_distribution(self, h):
        return self.prior_head(h)

    def posterior_distribution(self, h, features):
        """q(z_l | z_{>l}, x) from h [..., B, H] and the features d_l [B, ...]."""
        features = flat_features(features)
        features = tf.broadcast_to(features, tf.concat(
            [tf.shape(h)[:-1], tf.shape(features)[-1:]], axis=0))
        g = concat([h, features])
        for layer in self.merge_net:
            g = layer(g)
        return self.posterior_head(g)

    def code(self, posterior):
        return self.posterior_head.code(posterior)

    @staticmethod
    def decoder_input(z, state, context=None):
        return join(concat([z, state]), context)

    def decoder_input_shape(self, context_width=0):
        return (None, self.latent_dim + self.state_dim + context_width)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "hidden_units": self.hidden_units, "activation": self.activation,
                "min_scale": self.min_scale,
                "posterior_head": heads.serialize(self.posterior_head)}
