"""Encoders and decoders: shapes, numerical safety, config round trips, bad input."""

import json

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

import tfvae

tfd = tfp.distributions

IMAGE_SHAPE = (8, 8, 1)


def images(batch=3, seed=0):
    return np.random.default_rng(seed).random((batch, *IMAGE_SHAPE)).astype("float32")


ENCODERS = {
    "mlp": lambda: tfvae.MLPEncoder(latent_dim=3, hidden_units=(16, 8), min_scale=1e-3),
    "conv": lambda: tfvae.ConvEncoder(latent_dim=3, filters=(4, 8), hidden_units=(8,)),
}
DECODERS = {
    "mlp_bernoulli": lambda: tfvae.MLPDecoder(IMAGE_SHAPE, hidden_units=(8,)),
    "mlp_gaussian": lambda: tfvae.MLPDecoder(IMAGE_SHAPE, hidden_units=(8, 8),
                                             likelihood="gaussian", min_scale=0.05),
    "conv_bernoulli": lambda: tfvae.ConvDecoder(IMAGE_SHAPE, filters=(8, 4),
                                                hidden_units=(8,)),
    "conv_gaussian": lambda: tfvae.ConvDecoder(IMAGE_SHAPE, filters=(4,), hidden_units=(),
                                               likelihood="gaussian"),
}


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_returns_diagonal_gaussian(name):
    encoder = ENCODERS[name]()
    q = encoder(images(5))
    assert isinstance(q, tfd.Independent) and isinstance(q.distribution, tfd.Normal)
    assert q.batch_shape == [5] and q.event_shape == [3]
    assert q.sample().shape == (5, 3) and q.sample(7).shape == (7, 5, 3)
    assert encoder.latent_dim == 3
    assert np.all(q.stddev().numpy() >= encoder.min_scale)


@pytest.mark.parametrize("name", DECODERS)
def test_decoder_returns_image_distribution(name):
    decoder = DECODERS[name]()
    p = decoder(np.zeros((4, 3), "float32"))
    assert p.batch_shape == [4] and p.event_shape == list(IMAGE_SHAPE)
    assert p.mean().shape == (4, *IMAGE_SHAPE)
    assert decoder.output_shape == IMAGE_SHAPE
    pixel = tfd.Bernoulli if decoder.likelihood == "bernoulli" else tfd.Normal
    assert isinstance(p.distribution, pixel)
    raw = decoder.parameters(np.zeros((4, 3), "float32"))
    assert raw.shape == (4, *IMAGE_SHAPE[:2], IMAGE_SHAPE[2] * decoder.params_per_pixel)
    if decoder.likelihood == "bernoulli":
        mean = p.mean().numpy()
        assert np.all((mean >= 0) & (mean <= 1))
    else:
        assert np.all(p.stddev().numpy() >= decoder.min_scale)


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("value", [1e6, -1e6])
def test_posterior_scale_is_finite_for_huge_inputs(name, value):
    encoder = ENCODERS[name]()
    x = np.full((2, *IMAGE_SHAPE), value, "float32")
    q = encoder(x)
    scale, loc = q.stddev().numpy(), q.mean().numpy()
    assert np.all(np.isfinite(scale)) and np.all(np.isfinite(loc))
    assert np.all(scale >= encoder.min_scale)
    assert np.all(np.isfinite(q.log_prob(q.sample()).numpy()))


def test_gaussian_decoder_scale_is_finite_for_huge_codes():
    decoder = DECODERS["mlp_gaussian"]()
    p = decoder(np.full((2, 3), 1e6, "float32"))
    assert np.all(np.isfinite(p.stddev().numpy()))
    assert np.all(p.stddev().numpy() >= 0.05)


def _assert_same_outputs(layer, clone, inputs):
    np.testing.assert_equal(len(clone.weights), len(layer.weights))
    clone.set_weights(layer.get_weights())
    if isinstance(layer, tfvae.networks._Encoder):
        a, b = layer(inputs), clone(inputs)
        np.testing.assert_array_equal(a.mean(), b.mean())
        np.testing.assert_array_equal(a.stddev(), b.stddev())
    else:
        np.testing.assert_array_equal(layer.parameters(inputs), clone.parameters(inputs))


@pytest.mark.parametrize("name", [*ENCODERS, *DECODERS])
def test_config_round_trip(name):
    layer = {**ENCODERS, **DECODERS}[name]()
    is_encoder = name in ENCODERS
    inputs = images() if is_encoder else np.random.default_rng(1).normal(
        size=(3, 3)).astype("float32")
    layer(inputs)
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    clone(inputs)
    _assert_same_outputs(layer, clone, inputs)
    # Through JSON and the registered name, as a .keras file stores it.
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    assert blob["registered_name"] == f"tfvae>{type(layer).__name__}"
    again = keras.saving.deserialize_keras_object(blob)
    assert type(again) is type(layer) and again.built
    _assert_same_outputs(layer, again, inputs)


def test_dropout_is_active_only_in_training():
    encoder = tfvae.MLPEncoder(latent_dim=2, hidden_units=(64,), dropout=0.5)
    x = images()
    np.testing.assert_array_equal(encoder(x).mean(), encoder(x, training=False).mean())
    assert not np.allclose(encoder(x, training=True).mean(), encoder(x).mean())
    assert tfvae.MLPEncoder.from_config(encoder.get_config()).dropout == 0.5


@pytest.mark.parametrize("latent_dim", [0, -2])
@pytest.mark.parametrize("cls", [tfvae.MLPEncoder, tfvae.ConvEncoder])
def test_non_positive_latent_dim_is_rejected(cls, latent_dim):
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        cls(latent_dim=latent_dim)


@pytest.mark.parametrize("cls", [tfvae.MLPDecoder, tfvae.ConvDecoder])
def test_unknown_likelihood_is_rejected(cls):
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'"):
        cls(IMAGE_SHAPE, likelihood="poisson")


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"output_shape must be \(height, width, channels\)"):
        tfvae.MLPDecoder((28, 28))
    with pytest.raises(ValueError, match="output_shape entry must be a positive integer"):
        tfvae.MLPDecoder((28, 0, 1))
    with pytest.raises(ValueError, match="divisible by 4"):
        tfvae.ConvDecoder((10, 10, 1), filters=(8, 8))
    with pytest.raises(ValueError, match="hidden_units entry must be a positive integer"):
        tfvae.MLPEncoder(2, hidden_units=(8, 0))
