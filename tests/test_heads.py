"""Posterior heads (`heads.py`) against known answers.

* GaussianPosterior: mu and sigma = softplus(raw) + min_scale of hand-set weights;
  its code is the mean. Every head's declared kind and diagonal_gaussian match
  what it computes; `resolve` takes a head, its config or an older file's options.
* MADE: the masks of a small case written out; autoregressive by the Jacobian,
  d(m, s)_i / d z_j = 0 for j >= i and != 0 for some j < i; the context reaches
  every output but the first; log s stays inside (-3, 3).
* IAF: a fresh flow is its Gaussian; with random steps, log_prob(f(z_0)) =
  log N(z_0) - log |det df/dz_0| (a tape's Jacobian and a numerical one), the inverse
  is exact, samples carry the density log_prob gives, the density of a 2-d flow
  integrates to 1 on a grid, and [k, B, D] codes score as k separate calls.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import heads
from tiny_models import softplus

tfd = tfp.distributions


# -- the Gaussian posterior ------------------------------------------------------------

def test_the_gaussian_head_is_the_dense_layer_split_into_mean_and_scale():
    head = heads.GaussianPosterior(2, min_scale=0.01)
    head.build((None, 3))
    kernel = np.arange(12, dtype="float32").reshape(3, 4) / 10.0
    bias = np.array([0.5, -0.5, -1.0, 2.0], "float32")
    head.set_weights([kernel, bias])
    h = np.array([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]], "float32")
    params = h @ kernel + bias
    q = head(h)
    assert heads.is_diagonal_gaussian(q)
    assert q.batch_shape == [2] and q.event_shape == [2]
    np.testing.assert_allclose(q.mean(), params[:, :2], rtol=1e-6)
    np.testing.assert_allclose(q.stddev(), softplus(params[:, 2:]) + 0.01, rtol=1e-6)
    np.testing.assert_array_equal(head.code(q), q.mean())


def test_heads_are_made_by_name_and_an_unknown_name_is_refused_in_one_line():
    gaussian = heads.posterior_head(3, "gaussian", min_scale=0.1)
    iaf = heads.posterior_head(3, "iaf", flow_steps=3, flow_hidden_units=5)
    assert type(gaussian) is heads.GaussianPosterior and gaussian.min_scale == 0.1
    assert type(iaf) is heads.IAFPosterior
    assert (iaf.flow_steps, iaf.flow_hidden_units, len(iaf.steps)) == (3, 5, 3)
    with pytest.raises(ValueError, match="posterior") as error:
        heads.posterior_head(3, "realnvp")
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", heads.POSTERIORS)
def test_every_head_says_what_it_is(name):
    head = heads.posterior_head(2, name, flow_hidden_units=4)
    assert head.kind == name
    q = head(tf.random.normal([3, 5]))
    assert head.diagonal_gaussian == heads.is_diagonal_gaussian(q)


def test_resolve_takes_a_head_its_config_or_the_flat_options_of_older_files():
    gaussian = heads.resolve(None, 3, min_scale=0.01)
    assert type(gaussian) is heads.GaussianPosterior
    assert (gaussian.latent_dim, gaussian.min_scale, gaussian.name) == (3, 0.01, "head")
    old = heads.resolve(None, 3, name="posterior_head", posterior="iaf", flow_steps=3,
                        flow_hidden_units=5)
    assert type(old) is heads.IAFPosterior and old.name == "posterior_head"
    assert (old.flow_steps, old.flow_hidden_units) == (3, 5)
    assert heads.resolve(old, 3) is old
    config = keras.saving.serialize_keras_object(old)
    again = heads.resolve(config, 3)
    assert type(again) is heads.IAFPosterior and again.get_config() == old.get_config()
    with pytest.raises(ValueError, match="The posterior head is over 3 dimensions, its "
                                         "body's latent_dim is 2."):
        heads.resolve(old, 2)


@pytest.mark.parametrize("make, words", [
    (lambda: heads.GaussianPosterior(0), "latent_dim must be a positive integer"),
    (lambda: heads.IAFPosterior(2, flow_steps=0), "flow_steps must be a positive"),
    (lambda: heads.IAFPosterior(2, flow_hidden_units=-1), "flow_hidden_units must be"),
    (lambda: heads.MADE(2, hidden_units=0), "flow_hidden_units must be"),
])
def test_bad_sizes_are_refused_in_one_line(make, words):
    with pytest.raises(ValueError, match=words):
        make()


# -- MADE ------------------------------------------------------------------------------

def test_made_masks_of_a_small_case():
    # D = 3, 4 hidden units of degrees 1, 2, 1, 2.
    to_hidden, to_output = heads.made_masks(3, 4)
    np.testing.assert_array_equal(to_hidden, [[1, 1, 1, 1],    # z_0 reaches all
                                              [0, 1, 0, 1],    # z_1: degree 2 only
                                              [0, 0, 0, 0]])   # z_2 reaches none
    np.testing.assert_array_equal(to_output, [[0, 1, 1],       # degree 1 -> out 1, 2
                                              [0, 0, 1],       # degree 2 -> out 2
                                              [0, 1, 1],
                                              [0, 0, 1]])
    one_hidden, _ = heads.made_masks(1, 3)
    assert not one_hidden.any()  # a single z has no autoregressive input


def random_made(latent_dim=4, hidden_units=12, context=3, seed=0):
    """A built MADE step with random weights everywhere (its outputs start at 0)."""
    keras.utils.set_random_seed(seed)
    step = heads.MADE(latent_dim, hidden_units)
    step.build(((None, latent_dim), (None, context)))
    rng = np.random.default_rng(seed)
    for weight in step.weights:
        weight.assign(rng.normal(scale=0.7, size=weight.shape).astype("float32"))
    return step


def test_made_is_autoregressive_by_its_jacobian():
    step = random_made()
    z = tf.constant(np.random.default_rng(1).normal(size=(1, 4)), tf.float32)
    context = tf.constant([[0.3, -0.2, 1.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(z)
        shift, log_scale = step(z, context)
    for output in (shift, log_scale):
        jacobian = np.abs(tape.batch_jacobian(output, z)[0].numpy())  # [out i, in j]
        np.testing.assert_array_equal(np.triu(jacobian), 0.0)  # nothing from j >= i
        assert np.all(np.diag(jacobian, -1) > 1e-6)  # output i sees z_{i-1}
        assert np.all(jacobian[-1, :-1] > 1e-6)  # the last sees every earlier one


def test_the_context_reaches_every_output_but_the_first():
    """Output 0 reads no hidden unit (none has degree < 1), so its (m, s) are learned
    constants; the base Gaussian carries the first coordinate's dependence on h."""
    step = random_made()
    z = tf.zeros([1, 4])
    context = tf.constant([[0.3, -0.2, 1.0]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(context)
        shift, log_scale = step(z, context)
    for output in (shift, log_scale):
        reach = np.abs(tape.batch_jacobian(output, context)[0].numpy()).sum(axis=1)
        assert reach[0] == 0.0 and np.all(reach[1:] > 1e-6)


def test_made_log_scales_are_soft_clipped_inside_three():
    step = random_made()
    for weight in (step.out_kernel, step.out_bias):
        weight.assign(1e3 * weight)
    z = tf.constant(np.random.default_rng(2).normal(size=(16, 4)), tf.float32)
    _, log_scale = step(z, tf.ones([16, 3]))
    log_scale = log_scale.numpy()
    assert np.all(np.abs(log_scale) <= 3.0) and np.abs(log_scale).max() > 2.9


# -- the IAF posterior -------------------------------------------------------------------

def test_a_fresh_iaf_is_its_gaussian():
    keras.utils.set_random_seed(0)
    head = heads.IAFPosterior(3, flow_steps=2, flow_hidden_units=16)
    gauss = heads.GaussianPosterior(3)
    features = tf.random.normal([5, 7])
    head.build(features.shape)
    gauss.build(features.shape)
    gauss.set_weights(head.params.get_weights())
    q, base = head(features), gauss(features)
    z, log_q = q.experimental_sample_and_log_prob(4, seed=[1, 2])
    np.testing.assert_allclose(log_q, base.log_prob(z), atol=1e-5)
    np.testing.assert_allclose(q.log_prob(z), base.log_prob(z), atol=1e-5)
    np.testing.assert_allclose(head.code(q), base.mean(), atol=1e-6)
    assert not heads.is_diagonal_gaussian(q)


def random_iaf_head(latent_dim=3, seed=1):
    keras.utils.set_random_seed(seed)
    head = heads.IAFPosterior(latent_dim, flow_steps=2, flow_hidden_units=8,
                              context_dim=4)
    head.build((None, 5))
    for step in head.steps:  # away from the identity
        step.out_kernel.assign(0.5 * tf.random.normal(step.out_kernel.shape))
        step.out_bias.assign(0.3 * tf.random.normal(step.out_bias.shape))
    return head


def _random_iaf(latent_dim=3):
    return random_iaf_head(latent_dim)(tf.random.normal([1, 5]))


def test_iaf_log_det_matches_a_numerical_jacobian_and_inverts_exactly():
    q = _random_iaf()
    z0 = tf.constant([[0.3, -1.1, 0.7]])
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z, log_det = q.forward(z0)
    jacobian = tape.batch_jacobian(z, z0)[0].numpy()
    # Reversal between steps permutes, so J is triangular only up to the order.
    assert not np.allclose(jacobian, np.diag(np.diag(jacobian)))
    np.testing.assert_allclose(log_det[0], np.linalg.slogdet(jacobian)[1], atol=1e-4)
    step = 1e-3
    numeric = np.stack([(q.forward(z0 + step * e)[0] - q.forward(z0 - step * e)[0])[0]
                        / (2 * step) for e in np.eye(3, dtype="float32")], axis=1)
    np.testing.assert_allclose(jacobian, numeric, atol=2e-2)
    back, inverse_log_det = q.inverse(z)
    np.testing.assert_allclose(back, z0, atol=1e-5)
    np.testing.assert_allclose(inverse_log_det, log_det, atol=1e-5)


def test_iaf_log_prob_is_the_change_of_variables():
    q = _random_iaf()
    z0 = tf.constant(np.random.default_rng(3).normal(size=(6, 3)), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z0)
        z, _ = q.forward(z0)
    jacobians = tape.batch_jacobian(z, z0).numpy()  # [6, 3, 3]
    log_det = np.linalg.slogdet(jacobians.astype("float64"))[1]
    expected = q.base_distribution.log_prob(z0).numpy() - log_det
    assert np.ptp(log_det) > 0.1  # the volume change varies with z_0
    np.testing.assert_allclose(q.log_prob(z), expected, atol=1e-4)


def test_iaf_samples_have_the_density_log_prob_gives():
    q = _random_iaf()
    z, log_q = q.experimental_sample_and_log_prob(64, seed=[3, 4])
    np.testing.assert_allclose(q.log_prob(z), log_q, atol=1e-4)


def test_the_density_of_a_two_dimensional_flow_integrates_to_one():
    q = _random_iaf(latent_dim=2)
    z0 = q.base_distribution.sample(2000, seed=[5, 6]).numpy()
    low, high = z0.min() - 4.0, z0.max() + 4.0  # generous bounds around the mass
    edges = np.linspace(low, high, 301)
    centres = (edges[:-1] + edges[1:]) / 2
    grid = np.stack(np.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 1, 2)
    density = np.exp(q.log_prob(tf.constant(grid, tf.float32)).numpy())
    assert density.sum() * (edges[1] - edges[0]) ** 2 == pytest.approx(1.0, abs=5e-3)


def test_codes_of_k_samples_score_as_k_separate_calls():
    head = random_iaf_head()
    features = tf.random.normal([4, 5])
    q = head(features)
    z = q.sample(3, seed=[7, 8])  # [3, 4, 3]
    assert z.shape == (3, 4, 3) and q.log_prob(z).shape == (3, 4)
    one_by_one = np.stack([q.log_prob(z[i]).numpy() for i in range(3)])
    np.testing.assert_allclose(q.log_prob(z), one_by_one, atol=1e-5)
    np.testing.assert_allclose(head.code(q), q.forward(q.base_distribution.mean())[0])
