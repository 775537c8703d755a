"""Encoders q(z|x) and decoders p(x|z): Keras 3 layers that return distributions.

Each encoder maps images [B, H, W, C] to a diagonal Gaussian posterior over a
`latent_dim`-vector; each decoder maps codes [B, latent_dim] to a likelihood with
event shape [H, W, C] (see `distributions.py` for the heads).

* MLP (Kingma & Welling 2014, appendix C): flatten -> Dense stacks.
* Conv: strided 3x3 convolutions down, and transposed convolutions up; each stage
  halves (doubles) the spatial size, so H and W must be divisible by 2**len(filters).

Conditional models (Sohn et al. 2015): an encoder built with `context_dim` C > 0
gives q(z|x, c); the context c [B, C] (a one-hot label or any float vector) joins
the flattened image features before the Dense layers, so h_1 = f(W_x x + W_c c).
A decoder is conditioned by its input alone: the model hands it [z, c].
"""

import math

import keras
import tensorflow as tf

from tfvae import discretized, distributions, heads
from tfvae.checks import check_count
from tfvae.conditioning import join



def dense_stack(hidden_units, activation, prefix):
    return [
        keras.layers.Dense(check_count(units, "hidden_units entry"), activation,
                           name=f"{prefix}_{i}")
        for i, units in enumerate(hidden_units)
    ]


class _Encoder(keras.layers.Layer):
    """A body (features of the images) under a posterior head (see `heads.py`).

    `features(images)` lists the body's intermediate features, bottom to top (the
    bottom-up path of a hierarchical VAE); the head reads the last of them. With
    `context_dim` > 0 every call takes the context c [B, context_dim] too, joined to
    the flattened images (see the module docstring). `head`: the posterior head (a
    layer of `heads.py` over latent_dim; default: Gaussian with floor `min_scale`).
    """

    def __init__(self, latent_dim, min_scale=1e-4, head=None, context_dim=0, **kwargs):
        legacy = heads.pop_legacy_options(kwargs)
        super().__init__(**kwargs)
        self.latent_dim = check_count(latent_dim, "latent_dim")
        self.context_dim = int(context_dim)
        if self.context_dim < 0:
            raise ValueError(f"context_dim must be >= 0, got {context_dim!r}.")
        self.min_scale = float(min_scale)
        self.head = heads.resolve(head, self.latent_dim, self.min_scale, **legacy)

    @property
    def posterior(self):
        """The posterior head's kind ("gaussian", "iaf")."""
        return self.head.kind

    @property
    def diagonal_gaussian(self):
        """q(z|x) is a diagonal Gaussian (`heads`' declaration)."""
        return self.head.diagonal_gaussian

    def body_layers(self):
        raise NotImplementedError

    def features(self, images, training=None, context=None):
        raise NotImplementedError

    def build(self, input_shape):
        shape = tuple(input_shape)
        for layer in self.body_layers():
            layer.build(shape)
            shape = tuple(layer.compute_output_shape(shape))
            if layer is self.flatten:  # the context joins here (`with_context`)
                shape = (*shape[:-1], shape[-1] + self.context_dim)
        if not self.head.built:
            self.head.build(shape)

    def with_context(self, flat, context):
        """Flat image features [B, F] joined with the context: [B, F + context_dim]."""
        if not self.context_dim:
            return flat
        if context is None:
            raise ValueError(f"{self.name} is conditional (context_dim "
                             f"{self.context_dim}): call it with context=[B, "
                             f"{self.context_dim}].")
        return join(flat, context)

    def top_posterior(self, features):
        """q(z|x) from the last of `features`."""
        return self.head(features)

    def call(self, images, context=None, training=None):
        return self.top_posterior(
            self.features(images, training=training, context=context)[-1])

    def code(self, posterior):
        """The point of z a person looks at (the mean of a Gaussian posterior)."""
        return self.head.code(posterior)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                "min_scale": self.min_scale,
                "head": heads.serialize(self.head),
                "context_dim": self.context_dim}


@keras.saving.register_keras_serializable(package="tfvae")
class MLPEncoder(_Encoder):
    """q(z|x) from a multilayer perceptron.

    Args:
        latent_dim: size of z.
        hidden_units: sizes of the hidden Dense layers.
        activation: their activation.
        min_scale: floor on the posterior standard deviation.
        dropout: dropout rate after each hidden layer during training (a regularizer
            against memorising a small, statically binarized training set).

    Call: images [B, H, W, C] -> `tfd.Independent(Normal)`, batch [B], event [latent_dim].
    """

    def __init__(self, latent_dim, hidden_units=(500, 500), activation="relu",
                 min_scale=1e-4, dropout=0.0, **kwargs):
        super().__init__(latent_dim, min_scale, **kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.dropout = float(dropout)
        self.flatten = keras.layers.Flatten()
        self.hidden = dense_stack(self.hidden_units, activation, "hidden")
        self.drop = keras.layers.Dropout(self.dropout)

    def body_layers(self):
        return [self.flatten, *self.hidden]

    def features(self, images, training=None, context=None):
        h, features = self.with_context(self.flatten(images), context), []
        for layer in self.hidden:
            h = self.drop(layer(h), training=training)
            features.append(h)
        return features or [h]

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="tfvae")
class ConvEncoder(_Encoder):
    """q(z|x) from strided convolutions followed by Dense layers.

    Args:
        latent_dim: size of z.
        filters: channels of each stride-2 3x3 convolution.
        hidden_units: Dense layers after flattening the feature map.
        activation, min_scale: as for `MLPEncoder`.
    """

    def __init__(self, latent_dim, filters=(32, 64), hidden_units=(256,),
                 activation="relu", min_scale=1e-4, **kwargs):
        super().__init__(latent_dim, min_scale, **kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.convs = [
            keras.layers.Conv2D(check_count(f, "filters entry"), 3, strides=2,
                                padding="same", activation=activation, name=f"conv_{i}")
            for i, f in enumerate(self.filters)
        ]
        self.flatten = keras.layers.Flatten()
        self.hidden = dense_stack(self.hidden_units, activation, "hidden")

    def body_layers(self):
        return [*self.convs, self.flatten, *self.hidden]

    def features(self, images, training=None, context=None):
        h, features = images, []
        for layer in self.convs:
            h = layer(h)
            features.append(h)
        h = self.with_context(self.flatten(h), context)
        for layer in self.hidden:
            h = layer(h)
            features.append(h)
        if not self.hidden and features:
            features[-1] = h  # the head reads flat features
        return features or [h]

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "hidden_units": self.hidden_units, "activation": self.activation}


class _Decoder(keras.layers.Layer):
    """Shared head: features -> per-pixel parameters -> image likelihood."""

    def __init__(self, output_shape, likelihood="bernoulli", min_scale=1e-3,
                 likelihood_components=discretized.DEFAULT_COMPONENTS, **kwargs):
        super().__init__(**kwargs)
        if len(output_shape) != 3:
            raise ValueError(
                f"output_shape must be (height, width, channels), got {output_shape!r}.")
        self.output_shape = tuple(check_count(d, "output_shape entry")
                                  for d in output_shape)
        self.likelihood = distributions.check_likelihood(likelihood)
        self.min_scale = float(min_scale)
        self.likelihood_components = distributions.check_components(likelihood_components)
        # Parameter maps of the whole pixel, all its channels.
        self.params_per_pixel = distributions.params_per_pixel(
            likelihood, self.output_shape[-1], self.likelihood_components)

    def parameters(self, z, training=None):
        """z [B, latent_dim] -> unconstrained parameters [B, H, W, params_per_pixel]."""
        raise NotImplementedError

    # Axes of one input: 1 for codes [..., D]; 3 for maps [..., h, w, c].
    input_rank = 1

    def call(self, z, training=None):
        """p(x|z) for z [..., D] (or maps [..., h, w, c]): batch [...] (e.g. [k, B]
        for k samples of B codes).

        The network sees the codes flattened to [N, D]; images [B, H, W, C] are then
        scored against the [k, B] likelihood by broadcasting, with no tiled copy.
        """
        rank = self.input_rank
        lead = tf.shape(z)[:-rank]
        params = self.parameters(tf.reshape(z, [-1, *z.shape[-rank:]]), training=training)
        params = tf.reshape(params, tf.concat([lead, tf.shape(params)[1:]], axis=0))
        return distributions.image_likelihood(self.likelihood, params, self.min_scale,
                                              self.output_shape[-1])

    def get_config(self):
        return {**super().get_config(), "output_shape": self.output_shape,
                "likelihood": self.likelihood, "min_scale": self.min_scale,
                "likelihood_components": self.likelihood_components}


def _build_chain(layers, shape):
    for layer in layers:
        layer.build(shape)
        shape = tuple(layer.compute_output_shape(shape))
    return shape


@keras.saving.register_keras_serializable(package="tfvae")
class MLPDecoder(_Decoder):
    """p(x|z) from a multilayer perceptron.

    Args:
        output_shape: image shape (H, W, C).
        hidden_units: sizes of the hidden Dense layers.
        likelihood: "bernoulli" (binary pixels), "gaussian" (continuous pixels) or
            "discretized_logistic" (8-bit levels, `discretized.py`).
        activation: hidden activation.
        min_scale: floor on the Gaussian pixel standard deviation.
        dropout: dropout rate after each hidden layer during training.
        likelihood_components: K of the discretized logistic mixture (a keyword of
            every decoder; unused by the other likelihoods).

    Call: z [B, latent_dim] -> `tfd.Independent`, batch [B], event [H, W, C].
    """

    def __init__(self, output_shape, hidden_units=(500, 500), likelihood="bernoulli",
                 activation="relu", min_scale=1e-3, dropout=0.0, **kwargs):
        super().__init__(output_shape, likelihood, min_scale, **kwargs)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        self.dropout = float(dropout)
        self.hidden = dense_stack(self.hidden_units, activation, "hidden")
        self.drop = keras.layers.Dropout(self.dropout)
        height, width, channels = self.output_shape
        self.out = keras.layers.Dense(height * width * self.params_per_pixel,
                                      name="likelihood_params")
        self.reshape = keras.layers.Reshape((height, width, self.params_per_pixel))

    def build(self, input_shape):
        _build_chain([*self.hidden, self.out, self.reshape], tuple(input_shape))

    def parameters(self, z, training=None):
        h = z
        for layer in self.hidden:
            h = self.drop(layer(h), training=training)
        return self.reshape(self.out(h))

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "activation": self.activation, "dropout": self.dropout}


@keras.saving.register_keras_serializable(package="tfvae")
class ConvDecoder(_Decoder):
    """p(x|z) from Dense layers and stride-2 transposed convolutions.

    Args:
        output_shape: image shape (H, W, C); H and W divisible by 2**len(filters).
        filters: channels of each transposed convolution, coarse to fine.
        hidden_units: Dense layers before the reshape to the coarsest feature map.
        likelihood, activation, min_scale: as for `MLPDecoder`.
    """

    def __init__(self, output_shape, filters=(64, 32), hidden_units=(256,),
                 likelihood="bernoulli", activation="relu", min_scale=1e-3, **kwargs):
        super().__init__(output_shape, likelihood, min_scale, **kwargs)
        self.filters = tuple(int(f) for f in filters)
        self.hidden_units = tuple(int(u) for u in hidden_units)
        self.activation = activation
        height, width, channels = self.output_shape
        factor = 2 ** len(self.filters)
        if height % factor or width % factor:
            raise ValueError(
                f"ConvDecoder with {len(self.filters)} upsampling stages needs height "
                f"and width divisible by {factor}, got {self.output_shape}.")
        coarse = (height // factor, width // factor, self.filters[0] if self.filters
                  else channels)
        self.hidden = dense_stack(self.hidden_units, activation, "hidden")
        self.project = keras.layers.Dense(math.prod(coarse), activation=activation,
                                          name="project")
        self.reshape = keras.layers.Reshape(coarse)
        self.deconvs = [
            keras.layers.Conv2DTranspose(check_count(f, "filters entry"), 3,
                                         strides=2, padding="same",
                                         activation=activation, name=f"deconv_{i}")
            for i, f in enumerate(self.filters)
        ]
        self.out = keras.layers.Conv2D(self.params_per_pixel, 3,
                                       padding="same", name="likelihood_params")

    def stack(self):
        return [*self.hidden, self.project, self.reshape, *self.deconvs, self.out]

    def build(self, input_shape):
        _build_chain(self.stack(), tuple(input_shape))

    def parameters(self, z, training=None):
        h = z
        for layer in self.stack():
            h = layer(h)
        return h

    def get_config(self):
        return {**super().get_config(), "filters": self.filters,
                "hidden_units": self.hidden_units, "activation": self.activation}
