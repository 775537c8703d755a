"""Known answers for the objective family: schedules, clamps, MMD, KL, gradient estimators.

Gradient estimators are compared in expectation: each test draws many independent
estimates (per-example parameters or a batch of copies of the same image make one call
give many draws) and asserts agreement within 5 standard errors of the difference, the
standard errors coming from the sample variances.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
from tfvae import objectives
import tiny_models

tfd = tfp.distributions


def assert_equal_in_expectation(a, b, num_se=5.0):
    """Draws a [N, P] and b [M, P] have the same mean per column within num_se SE."""
    diff = a.mean(0) - b.mean(0)
    se = np.sqrt(a.var(0, ddof=1) / len(a) + b.var(0, ddof=1) / len(b))
    constant = se == 0  # parameters no draw moves (e.g. dead ReLU units)
    np.testing.assert_allclose(diff[constant], 0.0, atol=1e-6)
    np.testing.assert_array_less(np.abs(diff[~constant]), num_se * se[~constant])


# -- schedules and clamps -------------------------------------------------------


def test_kl_weight_warmup_schedule():
    values = [float(objectives.kl_weight(t, beta=2.0, warmup_steps=10))
              for t in (0, 1, 5, 10, 11, 1000)]
    np.testing.assert_allclose(values, [0.0, 0.2, 1.0, 2.0, 2.0, 2.0], rtol=1e-6)
    assert float(objectives.kl_weight(0, beta=0.5)) == 0.5  # no warm-up: beta at once
    assert float(objectives.kl_weight(tf.constant(3, tf.int64), 1.0, 4)) == 0.75


def test_free_bits_rate_clamps_the_batch_mean_per_dimension():
    rate_per_dim = tf.constant([[0.1, 2.0, 0.0], [0.3, 1.0, 0.0]])  # batch means .2, 1.5, 0
    np.testing.assert_allclose(objectives.free_bits_rate(rate_per_dim, 0.0), 1.7, rtol=1e-6)
    np.testing.assert_allclose(objectives.free_bits_rate(rate_per_dim, 0.5), 2.5, rtol=1e-6)
    np.testing.assert_allclose(objectives.free_bits_rate(rate_per_dim, 2.0), 6.0, rtol=1e-6)


def test_iwae_bound_is_log_mean_exp():
    log_w = tf.constant([[0.0, -1000.0], [np.log(3.0), -1001.0]])
    np.testing.assert_allclose(objectives.iwae_bound(log_w),
                               [np.log(2.0), -1000.0 + np.log((1 + np.exp(-1)) / 2)],
                               rtol=1e-6)
    one = tf.constant([[-3.0, 2.0]])
    np.testing.assert_allclose(objectives.iwae_bound(one), [-3.0, 2.0])


def test_bits_per_dim_of_log_probabilities():
    # Uniform 8-bit levels: log p = -D ln 256, 8 bits per value; numbers, arrays and
    # tensors alike.
    assert objectives.bits_per_dim(-784 * np.log(256.0), 784) == pytest.approx(8.0)
    np.testing.assert_allclose(objectives.bits_per_dim(np.array([-np.log(2.0), 0.0]), 1),
                               [1.0, 0.0])
    tensor = objectives.bits_per_dim(tf.constant([-3 * np.log(4.0)], tf.float32), 3)
    np.testing.assert_allclose(tensor.numpy(), [2.0], rtol=1e-6)
    with pytest.raises(ValueError, match="num_dims > 0"):
        objectives.bits_per_dim(0.0, 0)


def test_leave_one_out_baseline():
    np.testing.assert_allclose(objectives.leave_one_out_baseline(tf.constant(
        [[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])), [[4.0, 3.5], [3.0, 1.5], [2.0, 4.0]])
    # One sample per example: the mean of the other examples.
    np.testing.assert_allclose(objectives.leave_one_out_baseline(tf.constant(
        [[1.0, 2.0, 3.0]])), [[2.5, 2.0, 1.5]])


# -- KL ---------------------------------------------------------------------------


@pytest.mark.parametrize("prior_loc, prior_scale", [(0.0, 1.0), (0.5, 2.0)])
def test_analytic_and_sampled_kl_agree_within_sampling_error(prior_loc, prior_scale):
    loc = np.array([[0.0, 1.0, -2.0], [0.3, 0.0, 0.5]], "float32")
    scale = np.array([[1.0, 0.5, 0.2], [2.0, 1.5, 0.9]], "float32")
    q = tfd.Independent(tfd.Normal(loc, scale), 1)
    p = tfd.Independent(tfd.Normal(tf.fill([3], prior_loc), prior_scale), 1)
    num = 20000
    z = q.sample(num, seed=1)
    analytic, per_dim = objectives.kl_divergence(q, p, z, "analytic")
    sampled, none = objectives.kl_divergence(q, p, z, "sampled")
    auto, _ = objectives.kl_divergence(q, p, z, "auto")
    assert none is None
    np.testing.assert_array_equal(auto, analytic)
    # Closed form, by hand, per dimension.
    hand = (np.log(prior_scale / scale) + (scale ** 2 + (loc - prior_loc) ** 2)
            / (2 * prior_scale ** 2) - 0.5)
    np.testing.assert_allclose(per_dim, hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analytic, hand.sum(-1), rtol=1e-5)
    terms = (q.log_prob(z) - p.log_prob(z)).numpy()
    np.testing.assert_allclose(sampled, terms.mean(0), rtol=1e-5)
    se = terms.std(0, ddof=1) / np.sqrt(num)
    np.testing.assert_array_less(np.abs(sampled.numpy() - analytic.numpy()), 5 * se)


def test_unknown_kl_method_is_rejected():
    q = tfd.Independent(tfd.Normal(tf.zeros([1, 2]), 1.0), 1)
    with pytest.raises(ValueError, match="Unknown kl method 'exact'"):
        objectives.kl_divergence(q, q, q.sample(1), "exact")


# -- MMD --------------------------------------------------------------------------


def test_kernel_values():
    a, b = tf.constant([[0.0, 0.0]]), tf.constant([[1.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(objectives.kernel_matrix(a, b, "imq"), [[4 / 6, 1.0]],
                               rtol=1e-6)
    np.testing.assert_allclose(objectives.kernel_matrix(a, b, "rbf"), [[np.exp(-0.5), 1.0]],
                               rtol=1e-6)
    with pytest.raises(ValueError, match="Unknown MMD kernel 'cosine'"):
        objectives.kernel_matrix(a, b, "cosine")


@pytest.mark.parametrize("kernel", objectives.MMD_KERNELS)
def test_mmd_is_zero_for_equal_distributions_and_grows_with_a_shift(kernel):
    rng = np.random.default_rng(0)
    repeats, n, dim = 40, 200, 4
    estimate = tf.function(lambda a, b: objectives.mmd(a, b, kernel))

    def estimates(shift):
        return np.array([
            float(estimate(tf.constant(rng.normal(size=(n, dim)), tf.float32),
                           tf.constant(rng.normal(size=(n, dim)) + shift, tf.float32)))
            for _ in range(repeats)])

    null = estimates(0.0)
    noise = null.std(ddof=1)
    # Unbiased: the mean over repeats is 0 within its standard error.
    assert abs(null.mean()) < 5 * noise / np.sqrt(repeats)
    means = [estimates(shift).mean() for shift in (0.25, 0.5, 1.0)]
    assert means[0] > 5 * noise
    assert means[0] < means[1] < means[2]


def test_mmd_of_a_single_sample_is_zero_with_a_finite_gradient():
    a = tf.Variable([[1.0, 2.0]])
    with tf.GradientTape() as tape:
        value = objectives.mmd(a, tf.zeros([5, 2]))
    assert float(value) == 0.0
    np.testing.assert_array_equal(tape.gradient(value, a), [[0.0, 0.0]])


# -- gradient estimators on a toy with a closed-form gradient ----------------------


def _toy_gradients(estimator, mu, sigma, num_samples, num_draws, seed):
    """Per-draw estimates of d/d(mu, sigma) E_{N(mu, sigma)}[z^2] = (2 mu, 2 sigma)."""
    mu_v = tf.Variable(tf.fill([num_draws], mu))
    sigma_v = tf.Variable(tf.fill([num_draws], sigma))
    q = tfd.Normal(mu_v, sigma_v)
    with tf.GradientTape() as tape:
        z = q.sample(num_samples, seed=seed)  # [L, draws]
        if estimator == "reparameterization":
            objective = tf.reduce_mean(tf.square(z), axis=0)
        else:
            z = tf.stop_gradient(z)
            value = tf.reduce_mean(tf.square(z), axis=0)
            objective = value + objectives.score_function_surrogate(
                tf.square(z), tfd.Normal(mu_v, sigma_v).log_prob(z))
            np.testing.assert_allclose(objective, value)  # the surrogate is zero-valued
        total = tf.reduce_sum(objective)
    grads = tape.gradient(total, [mu_v, sigma_v])
    return np.stack([g.numpy() for g in grads], axis=1)  # [draws, 2]


@pytest.mark.parametrize("num_samples", [1, 4])
def test_score_function_and_reparameterization_agree_with_the_closed_form(num_samples):
    mu, sigma, draws = 1.5, 0.7, 40000
    exact = np.array([2 * mu, 2 * sigma])
    reparam = _toy_gradients("reparameterization", mu, sigma, num_samples, draws, 1)
    score = _toy_gradients("score_function", mu, sigma, num_samples, draws, 2)
    for grads in (reparam, score):
        se = grads.std(0, ddof=1) / np.sqrt(draws)
        np.testing.assert_array_less(np.abs(grads.mean(0) - exact), 5 * se)
    ratio = score.var(0) / reparam.var(0)
    assert np.all(ratio > 1.0), ratio


# -- DReG -------------------------------------------------------------------------


def _toy_iwae_gradients(estimator, k=4, draws=40000, x=2.0, mu=0.0, sigma=0.3):
    """Encoder gradients of the k-sample IWAE bound for p(z) = N(0, 1), p(x|z) = N(z, 1).

    Each of `draws` examples owns its copy of (mu, sigma), so one call gives `draws`
    independent estimates. "dreg" uses objectives.dreg_surrogate; "stl" is the
    sticking-the-landing variant with w~ instead of w~^2, biased for k > 1, as a
    negative control that the comparison can tell estimators apart.
    """
    mu_v = tf.Variable(tf.fill([draws, 1], mu))
    sigma_v = tf.Variable(tf.fill([draws, 1], sigma))

    def log_weights(z, loc, scale):
        joint = tfd.Normal(0.0, 1.0).log_prob(z) + tfd.Normal(z, 1.0).log_prob(x)
        return tf.reduce_sum(joint - tfd.Normal(loc, scale).log_prob(z), axis=-1)

    with tf.GradientTape() as tape:
        z = tfd.Normal(mu_v, sigma_v).sample(k, seed=3)  # [k, draws, 1]
        fixed = (tf.stop_gradient(mu_v), tf.stop_gradient(sigma_v))
        if estimator == "iwae":
            objective = objectives.iwae_bound(log_weights(z, mu_v, sigma_v))
        elif estimator == "dreg":
            z_fixed = tf.stop_gradient(z)
            with tf.GradientTape() as inner:
                inner.watch(z_fixed)
                log_w = log_weights(z_fixed, *fixed)
            objective = objectives.dreg_surrogate(inner, log_w, [z_fixed], [z])
            np.testing.assert_allclose(objective, 0.0)
        else:
            log_w = log_weights(z, *fixed)
            objective = tf.reduce_sum(objectives.normalized_weights(log_w)
                                      * log_w, axis=0)
        total = tf.reduce_sum(objective)
    grads = tape.gradient(total, [mu_v, sigma_v])
    return np.concatenate([g.numpy() for g in grads], axis=1)  # [draws, 2]


def test_dreg_equals_the_iwae_gradient_in_expectation():
    iwae = _toy_iwae_gradients("iwae")
    dreg = _toy_iwae_gradients("dreg")
    assert_equal_in_expectation(iwae, dreg)
    assert np.all(np.abs(iwae.mean(0)) > 1.0)  # q is far from p(z|x) = N(1, 1/2)
    # The same comparison rejects the biased STL variant.
    stl = _toy_iwae_gradients("stl")
    with pytest.raises(AssertionError):
        assert_equal_in_expectation(iwae, stl)


# -- through the VAE --------------------------------------------------------------

IMAGE_SHAPE = (4, 4, 1)


def tiny_vae(**kwargs):
    model = tiny_models.tiny_vae(IMAGE_SHAPE, hidden_units=(4,), seed=1, **kwargs)
    # Move q(z|x) away from N(0, I) so the rate has a sizeable gradient.
    head = model.encoder.head
    head.set_weights([head.get_weights()[0], np.array([1.0, -1.0, -1.0, 0.5], "float32")])
    return model


def copies(num_images=2, num_copies=256, seed=0):
    """A batch of copies of a few images: per-example estimates are independent draws."""
    rng = np.random.default_rng(seed)
    x = (rng.random((num_images, *IMAGE_SHAPE)) > 0.5).astype("float32")
    return np.tile(x, [num_copies, 1, 1, 1])


def encoder_gradient_draws(model, images, num_draws):
    variables = model.encoder.trainable_variables

    @tf.function
    def draw():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(images, None, model(images, training=True))
        return tf.concat([tf.reshape(g, [-1]) for g in tape.gradient(loss, variables)], 0)

    return np.stack([draw().numpy() for _ in range(num_draws)])


@pytest.mark.parametrize("options", [
    dict(),
    dict(kl="sampled"),
    dict(kl="sampled", beta=0.3, kl_warmup_steps=0),
    dict(prior="mixture", beta=0.5),
], ids=["analytic_kl", "sampled_kl", "sampled_kl_beta", "mixture_prior"])
def test_vae_score_function_gradient_is_unbiased(options):
    """Regression: with a sampled KL the score-function signal must carry the rate."""
    options = dict(options)
    if options.get("prior") == "mixture":
        keras.utils.set_random_seed(2)
        options["prior"] = tfvae.MixturePrior(2, num_components=3)
    images = copies()
    reparam = encoder_gradient_draws(tiny_vae(num_samples=8, **options), images, 20)
    score = encoder_gradient_draws(
        tiny_vae(num_samples=8, gradient_estimator="score_function", **options), images, 20)
    assert_equal_in_expectation(reparam, score)
    relative = np.linalg.norm(reparam.mean(0) - score.mean(0)) / np.linalg.norm(
        reparam.mean(0))
    assert relative < 0.05


def vampprior(num_pseudo_inputs=3):
    keras.utils.set_random_seed(2)
    prior = tfvae.VampPrior(IMAGE_SHAPE, num_pseudo_inputs)
    prior.build()
    # Spread the pseudo-inputs so that the mixture has distinct components.
    prior.raw_pseudo_inputs.assign(3.0 * np.random.default_rng(5).standard_normal(
        prior.raw_pseudo_inputs.shape).astype("float32"))
    return prior


@pytest.mark.parametrize("prior", [None, "vampprior"], ids=["standard_normal", "vampprior"])
def test_vae_dreg_gradient_equals_iwae_gradient_in_expectation(prior):
    """With a VampPrior, p(z) also depends on the encoder's weights directly."""
    images = copies(num_copies=128)

    def model(**kwargs):
        return tiny_vae(objective="iwae", num_samples=8,
                        prior=vampprior() if prior else None, **kwargs)

    iwae = encoder_gradient_draws(model(), images, 30)
    dreg = encoder_gradient_draws(model(gradient_estimator="dreg"), images, 30)
    assert_equal_in_expectation(iwae, dreg)
    relative = np.linalg.norm(iwae.mean(0) - dreg.mean(0)) / np.linalg.norm(iwae.mean(0))
    assert relative < (0.1 if prior else 0.05)  # the VampPrior gradient is noisier
    if prior:
        # The prior's direct dependence on the encoder is most of the gradient here,
        # so an estimator that lost it would fail the comparison above.
        direct = _prior_direct_gradient(model(), images)
        assert np.linalg.norm(direct) > 0.3 * np.linalg.norm(iwae.mean(0))


def _prior_direct_gradient(model, images):
    """Encoder gradient of -IWAE through p(z) alone: z and log q held fixed."""
    with tf.GradientTape() as tape:
        posterior = model.encoder(images)
        z = tf.stop_gradient(posterior.sample(model.num_samples))
        log_weights = (model.log_likelihood(images, z) + model.prior_distribution().log_prob(z)
                       - tf.stop_gradient(posterior.log_prob(z)))
        loss = -tf.reduce_mean(objectives.iwae_bound(log_weights))
    grads = tape.gradient(loss, model.encoder.trainable_variables)
    return np.concatenate([g.numpy().ravel() for g in grads])


@pytest.mark.parametrize("options, true_loss", [
    (dict(gradient_estimator="score_function", num_samples=3), "elbo"),
    (dict(objective="iwae", num_samples=4, gradient_estimator="dreg"), "iwae"),
])
def test_surrogate_terms_keep_the_loss_equal_to_the_objective(options, true_loss):
    model = tiny_vae(**options)
    images = copies(num_copies=4)
    terms = model(images, training=True)
    np.testing.assert_array_equal(terms["_surrogate"], 0.0)
    loss = model.compute_loss(images, None, terms)
    np.testing.assert_allclose(loss, -np.mean(terms[true_loss]), rtol=1e-6)


def test_loss_assembles_beta_free_bits_and_infovae_terms():
    images = copies(num_copies=4)
    model = tiny_vae(beta=3.0, free_bits=0.8)
    terms = model(images)
    rate_per_dim = terms["_rate_per_dim"].numpy()
    hand = terms["distortion"].numpy().mean() + 3.0 * np.maximum(
        rate_per_dim.mean(0), 0.8).sum()
    np.testing.assert_allclose(model.compute_loss(images, None, terms), hand, rtol=1e-6)
    np.testing.assert_allclose(rate_per_dim.sum(-1), terms["rate"], rtol=1e-5)

    model = tiny_vae(info_alpha=0.25, info_lambda=10.0, mmd_kernel="rbf")
    terms = model(images)
    mmd = terms["_mmd"].numpy()
    assert np.all(mmd == mmd[0])  # one batch-level divergence, broadcast per example
    hand = (terms["distortion"].numpy().mean() + 0.75 * terms["rate"].numpy().mean()
            + 9.25 * mmd[0])
    np.testing.assert_allclose(model.compute_loss(images, None, terms), hand, rtol=1e-6)


def test_infovae_fit_survives_a_last_batch_of_one_image():
    """Regression: MMD on one image was 0 / 0 and turned every weight into NaN."""
    keras.utils.set_random_seed(0)
    x = copies(num_images=1, num_copies=17)
    model = tiny_models.tiny_vae(IMAGE_SHAPE, hidden_units=(4,), info_lambda=10.0)
    model.compile(optimizer="adam")
    history = model.fit(x, epochs=1, batch_size=16, verbose=0).history
    assert np.isfinite(history["loss"][0])
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_mixture_prior_picks_the_sampled_kl():
    keras.utils.set_random_seed(2)
    images = copies(num_copies=2)
    model = tiny_vae(prior=tfvae.MixturePrior(2, num_components=3), num_samples=5)
    assert model.kl == "auto"
    terms = model(images)
    assert "_rate_per_dim" not in terms
    np.testing.assert_allclose(terms["elbo"], -(terms["rate"] + terms["distortion"]),
                               rtol=1e-6)
    with pytest.raises(ValueError, match="No closed-form KL is registered"):
        tiny_vae(prior=tfvae.MixturePrior(2, 3), kl="analytic")(images)
    with pytest.raises(ValueError, match="free_bits needs a factorized posterior"):
        tiny_vae(prior=tfvae.MixturePrior(2, 3), free_bits=0.1)(images)


def test_grad_variance_tool_measures_a_higher_score_function_variance():
    from tools import grad_variance  # pylint: disable=import-outside-toplevel

    model = tiny_models.tiny_vae(IMAGE_SHAPE, seed=4, objective="iwae",
                                 num_samples=3)  # the tool switches to the ELBO
    images = grad_variance.synthetic_batch(16, IMAGE_SHAPE, seed=1)
    results = grad_variance.compare_estimators(model, images, num_draws=40)
    assert set(results) == {"overall", "hidden_0", "posterior_params", "mean_check"}
    assert results["overall"]["num_params"] == 16 * 8 + 8 + 8 * 4 + 4
    for group in ("overall", "hidden_0", "posterior_params"):
        assert results[group]["ratio"] > 1.0, results
    check = results["mean_check"]
    assert check["relative_difference"] < 4 * check["noise_level"] + 0.05
    assert "ratio" in grad_variance.format_results(results)
    moments = grad_variance.RunningMoments()
    for value in ([1.0, 0.0], [2.0, 0.0], [6.0, 0.0]):
        moments.update(value)
    np.testing.assert_allclose(moments.mean, [3.0, 0.0])
    np.testing.assert_allclose(moments.variance, [7.0, 0.0])
