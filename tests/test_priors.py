"""Priors p(z): densities against hand computations, sampled KL against a reference."""

import json

import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

import tfvae
from tfvae import objectives
from tiny_models import softplus

tfd = tfp.distributions

IMAGE_SHAPE = (4, 4, 1)
LATENT = 2


def log_normal(z, loc, scale):
    """log N(z; loc, diag(scale^2)) summed over the last axis, in float64."""
    return np.sum(-0.5 * ((z - loc) / scale) ** 2 - np.log(scale)
                  - 0.5 * np.log(2 * np.pi), axis=-1)


def log_mixture(z, logits, locs, scales):
    """log sum_k pi_k N(z; m_k, s_k) for z [..., D] and K components, in float64."""
    log_pi = logits - np.logaddexp.reduce(logits)
    per_component = log_normal(z[..., None, :], locs, scales) + log_pi  # [..., K]
    return np.logaddexp.reduce(per_component, axis=-1)


def encoder():
    keras.utils.set_random_seed(3)
    layer = tfvae.MLPEncoder(LATENT, hidden_units=(8,))
    layer.build((None, *IMAGE_SHAPE))
    return layer


def mixture_prior():
    prior = tfvae.MixturePrior(LATENT, num_components=3)
    prior.build()
    prior.set_weights([np.array([0.0, 1.0, -1.0], "float32"),
                       np.array([[-2.0, 0.0], [1.0, 1.0], [2.0, -1.5]], "float32"),
                       np.array([[0.0, -1.0], [0.5, 0.5], [-0.5, 1.0]], "float32")])
    return prior


def mixture_numpy_params(prior):
    logits, locs, raw = (w.astype(np.float64) for w in prior.get_weights())
    return logits, locs, softplus(raw) + 1e-4


def vamp_prior():
    prior = tfvae.VampPrior(IMAGE_SHAPE, num_pseudo_inputs=4)
    prior.build()
    rng = np.random.default_rng(0)  # spread pseudo-inputs so the components differ
    prior.set_weights([rng.normal(0, 3, (4, *IMAGE_SHAPE)).astype("float32")])
    return prior


def vamp_numpy_params(prior, enc):
    components = enc(prior.pseudo_inputs())
    locs = components.mean().numpy().astype(np.float64)
    return np.zeros(prior.num_pseudo_inputs), locs, components.stddev().numpy().astype(
        np.float64)


def test_standard_normal_prior():
    p = tfvae.StandardNormalPrior(LATENT)()
    assert p.batch_shape == [] and p.event_shape == [LATENT]
    np.testing.assert_allclose(p.log_prob([[0.0, 0.0], [1.0, 2.0]]),
                               [-np.log(2 * np.pi), -np.log(2 * np.pi) - 2.5], rtol=1e-6)


def test_mixture_prior_density_matches_hand_computation():
    prior = mixture_prior()
    p = prior()
    assert p.batch_shape == [] and p.event_shape == [LATENT]
    z = np.random.default_rng(1).normal(0, 2, (50, LATENT))
    np.testing.assert_allclose(p.log_prob(z.astype("float32")),
                               log_mixture(z, *mixture_numpy_params(prior)), rtol=1e-5)
    assert len(prior.trainable_weights) == 3
    assert p.sample(6).shape == (6, LATENT)


def test_vamp_prior_is_the_encoder_posterior_at_pseudo_inputs():
    enc = encoder()
    prior = vamp_prior()
    pseudo = prior.pseudo_inputs().numpy()
    assert pseudo.shape == (4, *IMAGE_SHAPE) and pseudo.min() >= 0 and pseudo.max() <= 1
    p = prior(encoder=enc)
    assert p.batch_shape == [] and p.event_shape == [LATENT]
    z = np.random.default_rng(2).normal(0, 2, (50, LATENT))
    np.testing.assert_allclose(p.log_prob(z.astype("float32")),
                               log_mixture(z, *vamp_numpy_params(prior, enc)), rtol=1e-5)
    with pytest.raises(ValueError, match="VampPrior needs the encoder"):
        prior()


def test_mixture_and_vamp_have_no_closed_form_kl():
    enc = encoder()
    q = enc(np.zeros((2, *IMAGE_SHAPE), "float32"))
    assert objectives.has_analytic_kl(q, tfvae.StandardNormalPrior(LATENT)())
    for p in (mixture_prior()(), vamp_prior()(encoder=enc)):
        assert not objectives.has_analytic_kl(q, p)
        with pytest.raises(ValueError, match="No closed-form KL"):
            objectives.kl_divergence(q, p, q.sample(1), "analytic")


@pytest.mark.parametrize("kind", ["mixture", "vamp"])
def test_sampled_kl_matches_large_sample_reference(kind):
    """KL(q || p) from the model's estimator vs an independent float64 reference."""
    enc = encoder()
    x = np.random.default_rng(4).random((3, *IMAGE_SHAPE)).astype("float32")
    if kind == "mixture":
        prior = mixture_prior()
        params = mixture_numpy_params(prior)
    else:
        prior = vamp_prior()
        params = vamp_numpy_params(prior, enc)
    q = enc(x)
    p = prior(encoder=enc)
    num = 20000
    z = q.sample(num)
    estimate, per_dim = objectives.kl_divergence(q, p, z, "auto")
    assert per_dim is None
    # Reference: fresh float64 samples of q, densities written out by hand.
    rng = np.random.default_rng(5)
    loc, scale = q.mean().numpy().astype(np.float64), q.stddev().numpy().astype(np.float64)
    ref_z = loc + scale * rng.standard_normal((200000, *loc.shape))
    ref_terms = log_normal(ref_z, loc, scale) - log_mixture(ref_z, *params)
    reference = ref_terms.mean(0)
    sample_terms = (q.log_prob(z) - p.log_prob(z)).numpy()
    se = np.sqrt(sample_terms.var(0) / num + ref_terms.var(0) / ref_z.shape[0])
    np.testing.assert_array_less(np.abs(estimate.numpy() - reference), 5 * se)
    assert np.all(reference > 0)


@pytest.mark.parametrize("kind", ["standard", "mixture", "vamp"])
def test_prior_config_round_trip(kind):
    enc = encoder()
    prior = {"standard": lambda: tfvae.StandardNormalPrior(LATENT),
             "mixture": mixture_prior, "vamp": vamp_prior}[kind]()
    if not prior.built:
        prior.build()
    config = prior.get_config()
    clone = type(prior).from_config(config)
    assert clone.get_config() == config
    clone.build()
    clone.set_weights(prior.get_weights())
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(prior)))
    again = keras.saving.deserialize_keras_object(blob)
    again.set_weights(prior.get_weights())
    z = np.random.default_rng(6).normal(size=(5, LATENT)).astype("float32")
    for other in (clone, again):
        assert type(other) is type(prior)
        np.testing.assert_array_equal(other(encoder=enc).log_prob(z),
                                      prior(encoder=enc).log_prob(z))


def test_non_positive_sizes_are_rejected():
    with pytest.raises(ValueError, match="latent_dim must be a positive integer"):
        tfvae.StandardNormalPrior(0)
    with pytest.raises(ValueError, match="num_components must be a positive integer"):
        tfvae.MixturePrior(2, num_components=0)
    with pytest.raises(ValueError, match="num_pseudo_inputs must be a positive integer"):
        tfvae.VampPrior(IMAGE_SHAPE, num_pseudo_inputs=-1)
