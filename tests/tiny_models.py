"""Small models for the tests (seconds to build and train on a CPU) and the maths
that sets their weights to known values.

* `tiny_vae`: an MLP VAE with one hidden layer each way.
* `tiny_spatial_model`: a spatial hierarchy of two groups, 2x2 and 4x4, on 8x8 images.
* `softplus`, `inverse_softplus`: the scale heads' sigma = softplus(raw) + floor, in
  numpy, to read a scale off raw weights or to set raw weights for a scale.
"""

import keras
import numpy as np

import tfvae
from tfvae import builders


def tiny_vae(image_shape=(8, 8, 1), latent_dim=2, hidden_units=(8,), seed=None,
             **options):
    """VAE(MLPEncoder(latent_dim, hidden_units), MLPDecoder(image_shape,
    hidden_units), **options), its weights drawn after
    `keras.utils.set_random_seed(seed)` when a seed is given."""
    if seed is not None:
        keras.utils.set_random_seed(seed)
    return tfvae.VAE(tfvae.MLPEncoder(latent_dim, hidden_units),
                     tfvae.MLPDecoder(image_shape, hidden_units), **options)


def tiny_spatial_model(**options):
    """A spatial hierarchy (`blocks.py`) of two groups, 2 latent channels and 8 cell
    channels on 8x8 images, seeded; `options` go to `build_model`."""
    keras.utils.set_random_seed(3)
    return builders.build_model((8, 8, 1), **{
        "encoder": "resnet", "decoder": "resnet", "latent_groups": "2x1,4x1",
        "latent_channels": 2, "cell_channels": 8, **options})


def softplus(x):
    return np.logaddexp(0.0, x)


def inverse_softplus(y):
    """The raw value whose softplus is y > 0."""
    return np.log(np.expm1(y))
