"""Known answers for the distribution heads in tfvae/distributions.py."""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import distributions
from tfvae.checks import InputError
from tfvae import MLPDecoder, MLPEncoder, MixturePrior, VAE, VampPrior
from tiny_models import softplus

tfd = tfp.distributions


def test_gaussian_posterior_splits_loc_and_scale():
    params = np.array([[0.5, -1.0, 0.0, 2.0]], np.float32)  # loc (0.5, -1), raw (0, 2)
    q = distributions.gaussian_posterior(params, min_scale=0.01)
    assert isinstance(q, tfd.Independent)
    assert q.batch_shape == [1] and q.event_shape == [2]
    np.testing.assert_allclose(q.mean(), [[0.5, -1.0]])
    np.testing.assert_allclose(q.stddev(), [[softplus(0.0) + 0.01, softplus(2.0) + 0.01]],
                               rtol=1e-6)
    # log q at its mean: -sum_d log(sqrt(2 pi) sigma_d).
    sigma = softplus(np.array([0.0, 2.0])) + 0.01
    np.testing.assert_allclose(q.log_prob([[0.5, -1.0]]),
                               [-np.sum(0.5 * np.log(2 * np.pi) + np.log(sigma))], rtol=1e-6)


@pytest.mark.parametrize("raw", [1e6, -1e6, 3e38, -3e38])
def test_posterior_scale_is_finite_and_floored(raw):
    params = np.full([3, 8], raw, np.float32)
    q = distributions.gaussian_posterior(params, min_scale=1e-4)
    scale = q.stddev().numpy()
    assert np.all(np.isfinite(scale))
    assert np.all(scale >= 1e-4)
    if abs(raw) <= 1e6:  # near float32's max, loc / scale itself overflows in TFP
        assert np.all(np.isfinite(q.log_prob(q.mean()).numpy()))


def test_bernoulli_likelihood_matches_hand_computation():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=[2, 3, 4, 1]).astype(np.float32) * 3
    x = (rng.random([2, 3, 4, 1]) > 0.5).astype(np.float32)
    p = distributions.image_likelihood("bernoulli", logits, min_scale=1e-3)
    assert p.batch_shape == [2] and p.event_shape == [3, 4, 1]
    expected = np.sum(x * logits - softplus(logits), axis=(1, 2, 3))
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-5)
    np.testing.assert_allclose(p.mean(), 1 / (1 + np.exp(-logits)), rtol=1e-5)
    assert set(distributions.likelihood_parameters(p)) == {"logits"}
    np.testing.assert_allclose(distributions.likelihood_parameters(p)["logits"], logits)


def test_gaussian_likelihood_matches_hand_computation():
    rng = np.random.default_rng(1)
    # Two channels -> params carry 4: loc for channels 0-1, raw scale for channels 0-1.
    params = rng.normal(size=[2, 3, 3, 4]).astype(np.float32)
    x = rng.random([2, 3, 3, 2]).astype(np.float32)
    p = distributions.image_likelihood("gaussian", params, min_scale=1e-3)
    assert p.batch_shape == [2] and p.event_shape == [3, 3, 2]
    loc, sigma = params[..., :2], softplus(params[..., 2:]) + 1e-3
    expected = np.sum(-0.5 * ((x - loc) / sigma) ** 2 - np.log(sigma)
                      - 0.5 * np.log(2 * np.pi), axis=(1, 2, 3))
    np.testing.assert_allclose(p.log_prob(x), expected, rtol=1e-5)
    # A likelihood of batch [k, B] scores B images by broadcasting over k.
    twice = distributions.image_likelihood("gaussian", np.stack([params[::-1], params]),
                                           min_scale=1e-3)
    np.testing.assert_allclose(twice.log_prob(x)[1], expected, rtol=1e-5)
    np.testing.assert_allclose(p.mean(), loc)
    named = distributions.likelihood_parameters(p)
    assert set(named) == {"loc", "scale"}
    np.testing.assert_allclose(named["scale"], sigma, rtol=1e-6)


def test_gaussian_likelihood_scale_floor_for_huge_params():
    params = np.concatenate([np.zeros([1, 2, 2, 1]), np.full([1, 2, 2, 1], -1e6)], -1)
    p = distributions.image_likelihood("gaussian", params.astype(np.float32), 1e-3)
    np.testing.assert_allclose(p.stddev(), np.full([1, 2, 2, 1], 1e-3))
    assert np.isfinite(p.log_prob(np.ones([1, 2, 2, 1], np.float32)).numpy()).all()


def test_unknown_likelihood_is_a_clear_error():
    with pytest.raises(ValueError, match="Unknown likelihood 'poisson'"):
        distributions.check_likelihood("poisson")
    with pytest.raises(ValueError, match="Unknown likelihood"):
        distributions.image_likelihood("poisson", tf.zeros([1, 2, 2, 1]), 1e-3)
    assert distributions.params_per_pixel("bernoulli") == 1
    assert distributions.params_per_pixel("gaussian") == 2


def test_float16_params_give_float32_distributions():
    params = tf.zeros([2, 6], tf.float16)
    assert distributions.gaussian_posterior(params, 1e-4).dtype == tf.float32
    p = distributions.image_likelihood("bernoulli", tf.zeros([2, 2, 2, 1], tf.float16), 1e-3)
    assert p.dtype == tf.float32


def test_at_temperature_shrinks_gaussian_draws_toward_the_mean():
    params = tf.constant([[0.5, -2.0, 0.3, 1.0]])
    gaussian = distributions.gaussian_posterior(params, 1e-4)
    draws = gaussian.sample(4, seed=1)
    cooled = distributions.at_temperature(gaussian, draws, 0.25)
    np.testing.assert_allclose(cooled - gaussian.mean(), 0.25 * (draws - gaussian.mean()),
                               rtol=1e-5, atol=1e-6)
    assert distributions.at_temperature(gaussian, draws, 1) is draws
    mixture = distributions.gaussian_mixture(
        tf.zeros([3]), tfd.Independent(tfd.Normal(tf.zeros([3, 2]), 1.0), 1))
    with pytest.raises(InputError, match="needs Gaussian priors"):
        distributions.at_temperature(mixture, draws[..., :2], 0.5)


@pytest.mark.parametrize("temperature", [0, -1, float("nan"), "hot"])
def test_sampling_at_a_temperature_that_is_not_positive_is_one_clear_line(temperature):
    model = VAE(MLPEncoder(2, hidden_units=(4,)), MLPDecoder((4, 4, 1), hidden_units=(4,)))
    with pytest.raises(InputError, match="temperature must be a positive number"):
        model.sample(2, temperature=temperature)


@pytest.mark.parametrize("temperature, message", [
    ((0.5, 1.0), "temperature gives 2 temperatures; this model has 1 stochastic layers"),
    ([-1.0], "temperature must be a positive number"), ((0.5, "hot"), "gives 2")])
def test_one_temperature_per_layer_or_one_clear_line(temperature, message):
    model = VAE(MLPEncoder(2, hidden_units=(4,)), MLPDecoder((4, 4, 1), hidden_units=(4,)))
    assert model.sample(2, temperature=[0.5]).shape == (2, 4, 4, 1)
    with pytest.raises(InputError, match=message):
        model.sample(2, temperature=temperature)


# -- the fast paths equal TFP's own distributions ------------------------------------

def test_mixture_prior_log_prob_matches_tfp():
    image_shape = (4, 4, 1)
    encoder = MLPEncoder(3, hidden_units=(8,))
    for prior in (MixturePrior(3, 5), VampPrior(image_shape, 7)):
        model = VAE(encoder, MLPDecoder(image_shape, hidden_units=(8,)), prior=prior)
        p = model.prior_distribution()
        assert isinstance(p, distributions.DiagonalGaussianMixture)
        reference = tfd.MixtureSameFamily(p.mixture_distribution,
                                          p.components_distribution)
        z = 3.0 * tf.random.normal([4, 6, 3])
        np.testing.assert_allclose(p.log_prob(z), reference.log_prob(z), atol=1e-4)


def test_bernoulli_fast_path_matches_tfp_and_broadcasts_over_samples():
    model = VAE(MLPEncoder(3, (16,)), MLPDecoder((4, 4, 1), (16,)))
    images = (np.random.default_rng(0).random([5, 4, 4, 1]) > 0.5).astype(np.float32)
    z = tf.random.normal([3, 5, 3])
    logits = model.decode(z).distribution.logits_parameter()  # [3, 5, 4, 4, 1]
    reference = tfd.Independent(tfd.Bernoulli(logits=logits), 3)
    tiled = np.broadcast_to(images, (3, *images.shape))
    np.testing.assert_allclose(model.log_likelihood(images, z), reference.log_prob(tiled),
                               rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("pixels, binarization, expected", [
    ("binary", None, "bernoulli"), ("binary", "static", "bernoulli"),
    ("8-bit", "dynamic", "bernoulli"), ("8-bit", "static", "bernoulli"),
    ("8-bit", None, "discretized_logistic"), ("8-bit", "none", "discretized_logistic"),
    ("real", "none", "gaussian"), ("real", "dynamic", "bernoulli"), (None, None, "gaussian")])
def test_the_default_likelihood_is_the_one_of_the_pixels_as_binarized(
        pixels, binarization, expected):
    assert distributions.default_likelihood(pixels, binarization) == expected
