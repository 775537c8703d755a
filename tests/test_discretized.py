"""Known answers for the discretized logistic mixture of tfvae/discretized.py."""

import math

import numpy as np
import pytest
import tensorflow as tf

from tfvae import discretized
from tfvae.discretized import DiscretizedLogisticMixture

LEVELS = np.arange(256) / 255.0


def expit(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float64)))


def log_expit(x):
    return -np.logaddexp(0.0, -np.asarray(x, np.float64))


def logsumexp(x):
    x = np.asarray(x, np.float64)
    return x.max() + np.log(np.sum(np.exp(x - x.max())))


def all_levels(channels=1):
    """The 256 one-pixel images of level l in every channel: [256, 1, 1, C]."""
    return np.repeat(LEVELS.reshape(256, 1, 1, 1), channels, axis=-1).astype(np.float32)


def grey_pixel(logits, loc, scale):
    """One grey pixel: batch [], event [1, 1, 1], K components."""
    shape = (1, 1, 1, len(logits))
    return DiscretizedLogisticMixture(
        np.reshape(logits, (1, 1, len(logits))).astype(np.float32),
        np.reshape(loc, shape).astype(np.float32),
        np.reshape(scale, shape).astype(np.float32))


def level_probabilities(distribution, channels=1):
    return np.exp(distribution.log_prob(all_levels(channels)).numpy().astype(np.float64))


def logistic_cdf(x, loc, scale):
    return expit((x - loc) / scale)


def bin_probability(level, loc, scale):
    """P(level) of one discretized logistic, by the CDF, in float64."""
    upper = 1.0 if level == 255 else logistic_cdf((level + 0.5) / 255, loc, scale)
    lower = 0.0 if level == 0 else logistic_cdf((level - 0.5) / 255, loc, scale)
    return upper - lower


@pytest.mark.parametrize("loc, scale", [
    ((0.5,), (0.1,)), ((0.3, 0.9, -0.2), (0.01, 0.2, 0.05)), ((0.0,), (3.0,)),
    ((1.4, 0.5), (1e-4, 1e-5)), ((0.52,), (discretized.MIN_SCALE,))])
def test_probabilities_of_the_256_levels_sum_to_one(loc, scale):
    logits = np.linspace(-1.0, 1.0, len(loc))
    total = level_probabilities(grey_pixel(logits, loc, scale)).sum()
    assert abs(total - 1.0) < 1e-5


def test_a_tiny_scale_puts_the_mass_on_the_level_of_its_mean():
    for level in (0, 1, 100, 254, 255):
        p = level_probabilities(grey_pixel([0.0], [level / 255], [1e-4]))
        assert p[level] > 1 - 1e-6, level
        assert np.argmax(p) == level


def test_edge_bins_take_the_tails():
    loc, scale = 0.4, 0.3  # wide: much mass below 0 and above 1
    p = level_probabilities(grey_pixel([0.0], [loc], [scale]))
    # Level 0 is P(y < 0.5 / 255), level 255 is P(y > 254.5 / 255).
    np.testing.assert_allclose(p[0], logistic_cdf(0.5 / 255, loc, scale), rtol=1e-5)
    np.testing.assert_allclose(p[255], 1 - logistic_cdf(254.5 / 255, loc, scale),
                               rtol=1e-5)
    assert p[0] > 0.2 and p[255] > 0.1 and p[0] > 30 * p[1]
    # A location far outside [0, 1] gives its edge level all the mass.
    assert level_probabilities(grey_pixel([0.0], [-2.0], [0.05]))[0] > 1 - 1e-6
    assert level_probabilities(grey_pixel([0.0], [3.0], [0.05]))[255] > 1 - 1e-6


def test_one_component_matches_the_logistic_cdf_by_hand():
    loc, scale = 0.37, 0.02
    p = level_probabilities(grey_pixel([0.0], [loc], [scale]))
    expected = np.array([bin_probability(l, loc, scale) for l in range(256)])
    np.testing.assert_allclose(p, expected, rtol=1e-4, atol=1e-12)
    # Level 94 (0.3686), next to the location: by hand, F(94.5/255) - F(93.5/255).
    by_hand = 1 / (1 + math.exp(-(94.5 / 255 - loc) / scale)) - \
        1 / (1 + math.exp(-(93.5 / 255 - loc) / scale))
    assert p[94] == pytest.approx(by_hand, rel=1e-5)


def test_far_tail_bins_are_finite_and_accurate():
    # 0.3 away at scale 0.005: sigmoid differences underflow float32 (PixelCNN++
    # needs its midpoint fallback there); the log-space difference is exact.
    loc, scale = 0.9, 0.005
    log_p = grey_pixel([0.0], [loc], [scale]).log_prob(all_levels()).numpy()
    level = 50  # 141 scales away: sigmoid(-141) underflows float32
    a, b = ((level + 0.5) / 255 - loc) / scale, ((level - 0.5) / 255 - loc) / scale
    expected = log_expit(a) + log_expit(-b) + np.log(-np.expm1(b - a))
    assert np.isfinite(log_p).all()
    assert log_p[level] == pytest.approx(expected, rel=1e-5)
    assert -150 < log_p[level] < -130


def rgb_case(seed=0, k=2, height=2, width=2):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(height, width, k))
    loc = rng.random((height, width, 3, k))
    scale = rng.uniform(0.02, 0.2, (height, width, 3, k))
    coefficients = rng.uniform(-0.9, 0.9, (height, width, 3, k))
    return logits, loc, scale, coefficients


def rgb_log_prob_by_hand(levels, logits, loc, scale, coefficients):
    """log P of an image of levels [H, W, 3], channel by channel (float64)."""
    x = levels / 255.0
    total = 0.0
    for i in range(levels.shape[0]):
        for j in range(levels.shape[1]):
            terms = []
            for k in range(logits.shape[-1]):
                a = coefficients[i, j, :, k]  # (G|R, B|R, B|G)
                means = [loc[i, j, 0, k],
                         loc[i, j, 1, k] + a[0] * x[i, j, 0],
                         loc[i, j, 2, k] + a[1] * x[i, j, 0] + a[2] * x[i, j, 1]]
                terms.append(sum(np.log(bin_probability(levels[i, j, c], means[c],
                                                        scale[i, j, c, k]))
                                 for c in range(3)))
            log_pi = logits[i, j] - logsumexp(logits[i, j])
            total += logsumexp(log_pi + np.array(terms))
    return total


def rgb_distribution(logits, loc, scale, coefficients):
    return DiscretizedLogisticMixture(*(np.asarray(t, np.float32) for t in (
        logits, loc, scale, coefficients)))


def test_rgb_log_prob_is_the_chain_of_channel_terms():
    case = rgb_case()
    distribution = rgb_distribution(*case)
    assert distribution.event_shape == [2, 2, 3] and distribution.batch_shape == []
    rng = np.random.default_rng(1)
    for _ in range(3):
        levels = rng.integers(0, 256, (2, 2, 3))
        levels[0, 0] = (0, 255, 128)  # edge levels in the chain too
        log_p = distribution.log_prob((levels / 255.0).astype(np.float32)).numpy()
        assert log_p == pytest.approx(rgb_log_prob_by_hand(levels, *case), rel=1e-5)


def colours_near_the_chain(loc, coefficients, radius=20):
    """The colours of one pixel within `radius` levels of a component's coupled
    means, channel by channel: [N, 3] levels (all the mass, for scales of a level)."""
    def near(mean):
        centre = int(round(float(np.clip(mean, 0, 1)) * 255))
        return range(max(0, centre - radius), min(255, centre + radius) + 1)

    colours = set()
    for k in range(loc.shape[-1]):
        m, a = loc[0, 0, :, k], coefficients[0, 0, :, k]
        for r in near(m[0]):
            for g in near(m[1] + a[0] * r / 255):
                for b in near(m[2] + a[1] * r / 255 + a[2] * g / 255):
                    colours.add((r, g, b))
    return np.array(sorted(colours))


def colour_probabilities(distribution, colours):
    images = (colours / 255.0).reshape(-1, 1, 1, 3).astype(np.float32)
    return np.exp(distribution.log_prob(images).numpy().astype(np.float64))


def test_rgb_probabilities_sum_to_one_over_all_colours():
    logits, loc, scale, coefficients = rgb_case(seed=2, k=2, height=1, width=1)
    scale[:] = 0.004  # about a level: the colours near the chain hold the mass
    distribution = rgb_distribution(logits, loc, scale, coefficients)
    colours = colours_near_the_chain(loc, coefficients)
    total = colour_probabilities(distribution, colours).sum()
    assert abs(total - 1.0) < 1e-5


def chi_square(counts, probabilities):
    """Pearson's statistic and its degrees of freedom over cells of expected >= 5
    (the rest pooled into one cell)."""
    n = counts.sum()
    expected = n * probabilities
    big = expected >= 5
    observed = np.append(counts[big], counts[~big].sum())
    expected = np.append(expected[big], expected[~big].sum())
    keep = expected > 0
    stat = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
    return stat, keep.sum() - 1


def test_grey_sample_frequencies_match_the_probabilities():
    distribution = grey_pixel([0.5, -0.5], [0.02, 0.5], [0.01, 0.015])
    draws = distribution.sample(20000, seed=(3, 4)).numpy()
    levels = np.round(draws.reshape(-1) * 255).astype(int)
    np.testing.assert_allclose(draws.reshape(-1), levels / 255.0, atol=1e-6)
    stat, dof = chi_square(np.bincount(levels, minlength=256),
                           level_probabilities(distribution))
    # Chi-square with dof degrees of freedom: mean dof, sd sqrt(2 dof).
    assert dof > 10 and stat < dof + 5 * math.sqrt(2 * dof)


def test_rgb_sample_frequencies_match_the_chain():
    logits, loc, scale, coefficients = rgb_case(seed=4, k=2, height=1, width=1)
    scale[:] = 0.003
    distribution = rgb_distribution(logits, loc, scale, coefficients)
    colours = colours_near_the_chain(loc, coefficients)
    p = colour_probabilities(distribution, colours)
    assert abs(p.sum() - 1.0) < 1e-5
    draws = distribution.sample(20000, seed=(5, 6)).numpy().reshape(-1, 3)
    index = {tuple(colour): i for i, colour in enumerate(colours.tolist())}
    counts = np.bincount([index[tuple(c)] for c in np.round(draws * 255).astype(int)
                          .tolist()], minlength=len(colours))
    stat, dof = chi_square(counts, p)
    assert dof > 10 and stat < dof + 5 * math.sqrt(2 * dof)


def test_unseeded_sampling_uses_stateful_ops_and_gives_levels():
    distribution = grey_pixel([0.0, 0.0], [0.2, 0.8], [0.05, 0.05])
    draws = distribution.sample(50).numpy()
    assert draws.shape == (50, 1, 1, 1)
    np.testing.assert_allclose(draws * 255, np.round(draws * 255), atol=1e-4)
    assert ((draws >= 0) & (draws <= 1)).all() and draws.std() > 0.1


def test_mean_is_within_half_a_level_of_the_mean_level():
    for loc, scale in (((0.3, 0.7), (0.05, 0.1)), ((-0.1, 1.05), (0.02, 0.2)),
                       ((0.5,), (1e-4,))):
        distribution = grey_pixel(np.zeros(len(loc)), loc, scale)
        exact = np.sum(level_probabilities(distribution) * LEVELS)
        assert abs(float(distribution.mean().numpy().item()) - exact) < 0.5 / 255
    assert float(grey_pixel([0.0], [0.5], [1e-4]).mean().numpy().item()) == \
        pytest.approx(0.5, abs=1e-5)
    mean = rgb_distribution(*rgb_case()).mean().numpy()
    assert mean.shape == (2, 2, 3) and ((mean >= 0) & (mean <= 1)).all()


def test_params_layout_and_counts():
    assert discretized.params_per_pixel(1, 10) == 30
    assert discretized.params_per_pixel(3, 10) == 100
    logits, loc, scale, coefficients = rgb_case(seed=7, k=2, height=1, width=1)
    raw_scale = np.log(np.expm1(scale - discretized.MIN_SCALE))
    raw = np.concatenate([logits.reshape(-1), loc.reshape(-1),
                          raw_scale.reshape(-1), np.arctanh(coefficients).reshape(-1)])
    distribution = DiscretizedLogisticMixture.from_params(
        raw.reshape(1, 1, 20).astype(np.float32), channels=3)
    named = distribution.decoded_parameters()
    assert set(named) == {"mixture_logits", "loc", "scale", "coefficients"}
    np.testing.assert_allclose(named["loc"], loc, rtol=1e-6)
    np.testing.assert_allclose(named["scale"], scale, rtol=1e-4)
    np.testing.assert_allclose(named["coefficients"], coefficients, rtol=1e-4)
    levels = np.array([[[10, 200, 90]]])
    assert float(distribution.log_prob((levels / 255.0).astype(np.float32))) == \
        pytest.approx(rgb_log_prob_by_hand(levels, logits, loc, scale, coefficients),
                      rel=1e-4)
    with pytest.raises(ValueError, match="multiple of 10 parameters"):
        DiscretizedLogisticMixture.from_params(np.zeros((1, 1, 25), np.float32), 3)


def test_a_batch_of_likelihoods_scores_images_by_broadcasting():
    rng = np.random.default_rng(8)
    params = rng.normal(size=(4, 3, 2, 2, 30)).astype(np.float32)  # [k, B, H, W, 3K]
    images = (rng.integers(0, 256, (3, 2, 2, 1)) / 255.0).astype(np.float32)
    together = DiscretizedLogisticMixture.from_params(params, 1).log_prob(images).numpy()
    assert together.shape == (4, 3)
    one = DiscretizedLogisticMixture.from_params(params[2, 1], 1).log_prob(images[1])
    assert together[2, 1] == pytest.approx(float(one), rel=1e-6)
    assert (together <= 0).all()


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_16_bit_params_give_float32_log_probs(dtype):
    params = tf.cast(tf.random.stateless_normal([2, 2, 2, 30], [1, 2]), dtype)
    distribution = DiscretizedLogisticMixture.from_params(params, 1)
    log_p = distribution.log_prob(np.full((2, 2, 2, 1), 0.5, np.float32))
    assert log_p.dtype == tf.float32 and np.isfinite(log_p.numpy()).all()


@pytest.mark.parametrize("raw", [0.0, 30.0, -30.0, 1e3, -1e3])
def test_gradients_are_finite_at_every_level(raw):
    channels, k = 3, 2
    params = tf.Variable(tf.fill([1, 4, 2, discretized.params_per_pixel(channels, k)],
                                 raw))
    levels = np.array([[0, 1, 255], [254, 0, 255], [128, 255, 0], [255, 255, 255],
                       [0, 0, 0], [1, 254, 3], [77, 0, 200], [255, 128, 1]])
    images = (levels.reshape(1, 4, 2, 3) / 255.0).astype(np.float32)
    with tf.GradientTape() as tape:
        log_p = DiscretizedLogisticMixture.from_params(params, channels).log_prob(images)
    gradient = tape.gradient(log_p, params).numpy()
    assert np.isfinite(log_p.numpy()).all() and np.isfinite(gradient).all()


# -- the likelihood head: decoders, model, bits per dimension ---------------------------

import keras  # noqa: E402

import tfvae  # noqa: E402
from tfvae import builders, distributions, objectives  # noqa: E402
from tfvae import evaluate as ev  # noqa: E402

DISCRETIZED_DECODERS = {
    "mlp": lambda shape: tfvae.MLPDecoder(shape, (8,), likelihood="discretized_logistic",
                                          likelihood_components=3),
    "conv": lambda shape: tfvae.ConvDecoder(shape, (4,), (8,),
                                            likelihood="discretized_logistic",
                                            likelihood_components=3),
}


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", DISCRETIZED_DECODERS)
def test_decoders_give_the_discretized_likelihood(name, channels):
    shape = (4, 4, channels)
    decoder = DISCRETIZED_DECODERS[name](shape)
    assert decoder.params_per_pixel == distributions.params_per_pixel(
        "discretized_logistic", channels, 3) == 3 * (1 + 2 * channels + (
            3 if channels == 3 else 0))
    decoder.build((None, 3))
    z = np.zeros((2, 5, 3), np.float32)  # [k, B, D]
    p = decoder(z)
    assert isinstance(p, DiscretizedLogisticMixture) and p.num_components == 3
    assert p.batch_shape == [2, 5] and p.event_shape == list(shape)
    assert decoder.parameters(z[0]).shape == (5, 4, 4, decoder.params_per_pixel)
    log_p = p.log_prob(np.full((5, *shape), 0.5, np.float32)).numpy()
    assert log_p.shape == (2, 5) and (log_p <= 0).all()
    config = decoder.get_config()
    assert config["likelihood_components"] == 3
    again = type(decoder).from_config(config)
    assert again.params_per_pixel == decoder.params_per_pixel


def test_the_resnet_decoder_and_a_bad_component_count():
    model = builders.build_model((4, 4, 3), encoder="resnet", decoder="resnet",
                                 latent_groups="2x1,4x1", cell_channels=8,
                                 latent_channels=2, likelihood="discretized_logistic",
                                 likelihood_components=2)
    assert model.decoder.params_per_pixel == 20
    assert isinstance(model.decode(np.zeros((3, model.latent_dim), np.float32)),
                      DiscretizedLogisticMixture)
    with pytest.raises(ValueError, match="likelihood_components"):
        tfvae.MLPDecoder((4, 4, 1), (8,), likelihood="discretized_logistic",
                         likelihood_components=0)
    with pytest.raises(ValueError, match="autoregressive_layers > 0 needs"):
        builders.build_model((4, 4, 1), encoder="resnet", decoder="resnet",
                             latent_groups="2x1,4x1", autoregressive_layers=1,
                             likelihood="discretized_logistic")


def fixed_model(shape, loc, scale):
    """A VAE with q(z|x) = p(z) = N(0, I) and a decoder that ignores z: one logistic
    (K = 1) of `loc`, `scale` at every value. Every log-weight is log p(x|z) = log p(x)
    exactly, so the ELBO and log p(x) (any k) are the hand computation's."""
    model = tfvae.VAE(tfvae.MLPEncoder(2, (4,)),
                      tfvae.MLPDecoder(shape, (4,), likelihood="discretized_logistic",
                                       likelihood_components=1))
    head = model.encoder.head.params
    head.kernel.assign(tf.zeros_like(head.kernel))
    unit = float(np.log(np.expm1(1.0 - 1e-4)))  # softplus + the 1e-4 floor = 1
    head.bias.assign(np.array([0.0, 0.0, unit, unit], np.float32))
    out = model.decoder.out
    out.kernel.assign(tf.zeros_like(out.kernel))
    channels = shape[-1]
    raw_scale = float(np.log(np.expm1(scale - discretized.MIN_SCALE)))
    per_pixel = [0.0] + [loc] * channels + [raw_scale] * channels + [0.0] * (
        discretized.num_coefficients(channels))  # the coefficients: tanh(0) = 0
    out.bias.assign(np.tile(np.array(per_pixel, np.float32), shape[0] * shape[1]))
    return model


def test_bits_per_dim_is_minus_log_p_over_d_ln_2_of_the_same_model():
    shape, loc, scale = (2, 2, 1), 0.5, 0.1
    model = fixed_model(shape, loc, scale)
    levels = np.array([[0, 128, 140, 255], [127, 100, 30, 250], [64, 128, 192, 255]])
    images = (levels.reshape(3, *shape) / 255.0).astype(np.float32)
    by_hand = np.array([sum(np.log(bin_probability(l, loc, scale)) for l in row)
                        for row in levels])  # log p(x), nats
    bits_by_hand = -by_hand / (4 * math.log(2.0))
    terms = model.elbo(images)
    np.testing.assert_allclose(terms["elbo"], by_hand, rtol=1e-5)
    np.testing.assert_allclose(terms["bits_per_dim"], bits_by_hand, rtol=1e-5)
    report = ev.evaluate(model, images, num_samples=7, batch_size=3, verbose=0,
                         jit_compile=False)
    assert report["nll"] == pytest.approx(-by_hand.mean(), rel=1e-5)
    assert report["nll_bits_per_dim"] == pytest.approx(bits_by_hand.mean(), rel=1e-5)
    assert report["elbo_bits_per_dim"] == pytest.approx(bits_by_hand.mean(), rel=1e-5)
    assert report["nll_bits_per_dim"] == pytest.approx(
        objectives.bits_per_dim(-report["nll"], 4))
    assert "bits_per_dim" not in report and "log-probabilities" in report["figures"]
    assert model.metric_names[-1] == "bits_per_dim"


def test_a_model_of_uniform_noise_cannot_score_below_8_bits_per_dim():
    """Uniform random levels have entropy 8 bits per value; held-out images cost a
    model at least that in expectation (cross-entropy >= entropy), and the bounds
    (ELBO, IWAE) cost more."""
    keras.utils.set_random_seed(0)
    shape = (4, 4, 1)
    rng = np.random.default_rng(0)
    train_images, test_images = [(rng.integers(0, 256, (n, *shape)) / 255.0).astype(
        np.float32) for n in (2000, 1000)]
    model = builders.build_model(shape, encoder_hidden_units=(32,),
                                 decoder_hidden_units=(32,), latent_dim=2,
                                 likelihood="discretized_logistic")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), jit_compile=False)
    before = model.evaluate(test_images, batch_size=500, verbose=0, return_dict=True)
    model.fit(train_images, batch_size=100, epochs=10, verbose=0)
    report = ev.evaluate(model, test_images, num_samples=20, batch_size=500, verbose=0,
                         jit_compile=False)
    stderr = report["nll_bits_per_dim_stderr"]
    assert before["bits_per_dim"] > report["elbo_bits_per_dim"] + 0.5  # it trained
    assert report["nll_bits_per_dim"] > 8.0 - 4 * stderr
    assert report["elbo_bits_per_dim"] > report["nll_bits_per_dim"] - 4 * stderr
    assert report["nll_bits_per_dim"] < 8.3  # and close to the entropy


def test_a_bfloat16_model_scores_in_float32():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = builders.build_model((4, 4, 3), encoder="conv", decoder="conv",
                                     encoder_filters=(4,), decoder_filters=(4,),
                                     encoder_hidden_units=(8,), decoder_hidden_units=(8,),
                                     latent_dim=2, likelihood="discretized_logistic")
        assert model.decoder.out.compute_dtype == "bfloat16"
        images = (np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3)) / 255.0)
        terms = model.elbo(images.astype(np.float32))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    for name in ("elbo", "bits_per_dim"):
        assert terms[name].dtype == tf.float32 and np.isfinite(terms[name]).all()
