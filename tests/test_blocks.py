"""Spatial hierarchies (`blocks.py`, `cells.py`) against known answers.

A spatial hierarchy whose cells and heads are 1x1 convolutions without activations,
and whose prior and likelihood scales are constants, is linear-Gaussian: every z_l
and the likelihood's mean are affine in the standard normal draws eps, so

    z = c + G eps,   x = m + J eps + s * eps_x
    =>  x ~ N(m, J J^T + diag(s^2)),   p(z | x) Gaussian with
        mean c + G J^T C^-1 (x - m),  covariance G G^T - G J^T C^-1 J G^T,

with G and J the Jacobians of the generative walk (taken with a tape). Then
log p(x, z) - log p(z | x) = log p(x) for every z, the IWAE bound stays below
log p(x) and rises toward it with k, and the layer rates add up to the rate.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras
import tfvae
from tfvae import blocks, builders, cells
from pattern_data import binary_images as binary
from tiny_models import tiny_spatial_model as spatial_model

tfd = tfp.distributions

IMAGE = (4, 4, 1)


def linear_model(**objective):
    """Two groups (2x2 and 4x4, two channels each) of linear 1x1 cells; constant
    prior and likelihood scales (their heads' scale kernels zeroed)."""
    keras.utils.set_random_seed(0)
    encoder, decoder, top_down = builders.spatial_hierarchy(
        IMAGE, "2x1,4x1", latent_channels=2, channels=3, likelihood="gaussian",
        kernel_size=1, activation=None)
    model = tfvae.VAE(encoder, decoder, top_down=top_down, **objective)
    for head in [block.prior_head for block in top_down] + [decoder.out]:
        kernel, bias = head.get_weights()
        half = kernel.shape[-1] // 2
        kernel[..., half:] = 0.0
        bias[half:] = np.random.default_rng(1).uniform(-1.0, 0.5, half)
        head.set_weights([kernel, bias])
    for block in top_down:  # a posterior away from the prior
        kernel, bias = block.posterior_head.get_weights()
        block.posterior_head.set_weights([kernel * 30.0, bias])
    return model


def generative_jacobians(model):
    """(c, G, m, J, s) of the model above: z = c + G eps, mean(x) = m + J eps."""
    dims = list(model.latent_dims)
    eps = tf.zeros([1, sum(dims)])

    def walk(eps):
        parts = tf.split(eps, dims, axis=-1)

        def choose(index, posterior, prior):
            return prior.mean() + prior.stddev() * parts[index], None

        layers, inputs = model.walk(None, choose)
        likelihood = model.decoder(inputs)
        z = tf.concat([tf.reshape(l["z"], [1, -1]) for l in layers], -1)
        return z, tf.reshape(likelihood.mean(), [1, -1]), tf.reshape(
            likelihood.stddev(), [-1])

    with tf.GradientTape(persistent=True) as tape:
        tape.watch(eps)
        z, mean, scale = walk(eps)
    g = tape.jacobian(z, eps)[0, :, 0, :].numpy().astype("float64")
    j = tape.jacobian(mean, eps)[0, :, 0, :].numpy().astype("float64")
    return (z[0].numpy().astype("float64"), g, mean[0].numpy().astype("float64"), j,
            scale.numpy().astype("float64"))


def exact(model, x):
    """log p(x) [B] and the exact posteriors p(z | x) (a list of tfd.MVN)."""
    c, g, m, j, s = generative_jacobians(model)
    cov_x = j @ j.T + np.diag(s ** 2)
    flat = x.reshape(len(x), -1).astype("float64")
    log_px = tfd.MultivariateNormalFullCovariance(m, cov_x).log_prob(flat).numpy()
    gain = g @ j.T @ np.linalg.inv(cov_x)
    cov_z = g @ g.T - gain @ j @ g.T
    posteriors = [tfd.MultivariateNormalFullCovariance(c + gain @ (row - m),
                                                       (cov_z + cov_z.T) / 2)
                  for row in flat]
    return log_px, posteriors


def data(count=3, seed=0):
    return np.random.default_rng(seed).normal(size=(count, *IMAGE)).astype("float32")


def test_the_joint_over_the_exact_posterior_is_log_px_for_every_z():
    model, x = linear_model(), data()
    log_px, posteriors = exact(model, x)
    for row, (image, posterior) in enumerate(zip(x, posteriors)):
        z = posterior.sample(5, seed=row).numpy().astype("float32")  # [5, D]
        codes = tf.split(z[:, None, :], list(model.latent_dims), axis=-1)
        terms = model.log_weight_terms(tf.constant(image[None]), 5, codes=codes)
        log_joint = (terms["log_px_z"] + terms["log_p"]).numpy()[:, 0]
        np.testing.assert_allclose(log_joint - posterior.log_prob(z.astype("float64")),
                                   log_px[row], atol=2e-3)


def test_iwae_stays_below_log_px_and_rises_toward_it_and_rates_add_up():
    model, x = linear_model(), data()
    log_px, _ = exact(model, x)
    draws = 400
    log_w = model.log_importance_weights(tf.constant(x), 64 * draws).numpy()
    log_w = log_w.reshape(64, draws, -1)
    bounds = []
    for k in (1, 8, 64):
        per_draw = tf.reduce_logsumexp(log_w[:k], axis=0).numpy() - np.log(k)
        bounds.append(per_draw.mean(0))
        assert np.all(per_draw.mean(0) - 4 * per_draw.std(0) / np.sqrt(draws) < log_px)
    assert np.all(np.diff(np.stack(bounds), axis=0) > 0)
    assert np.all(bounds[0] < log_px - 0.5)  # the posterior is not the exact one
    terms = model.elbo(tf.constant(x), num_samples=2000)
    np.testing.assert_allclose(terms["rate"], terms["rate/1"] + terms["rate/2"], rtol=1e-5)


@pytest.mark.parametrize("temperature", [0.5, 1.0, (0.25, 1.0), [1.0, 0.5]])
def test_codes_sampled_at_temperature_t_have_t_squared_the_covariance(temperature):
    # z = c + G eps at t = 1; layer l's draw shrunk toward its mean by t_l gives
    # z = c + G T eps, T diagonal with t_l on layer l's draws: mean c, covariance
    # G T^2 G^T, exactly, in the linear model (t^2 G G^T for one t).
    model = linear_model()
    c, g, _, _, _ = generative_jacobians(model)
    _, codes = model.sample(20000, return_codes=True, temperature=temperature)
    codes = codes.numpy().astype("float64")
    t = np.repeat(np.broadcast_to(temperature, [2]), list(model.latent_dims))
    expected = g @ np.diag(t ** 2) @ g.T
    scale = np.sqrt(np.diag(expected))
    np.testing.assert_allclose(codes.mean(0), c, atol=0.05 * scale.max())
    np.testing.assert_allclose(np.cov(codes.T), expected, atol=0.05 * scale.max() ** 2)


def test_free_bits_count_channel_maps_of_spatial_groups():
    model = linear_model(free_bits=0.5)
    rates = tf.random.uniform([3, sum(model.latent_dims)])
    units = model.free_bits_units(rates).numpy()
    assert units.shape == (3, 4)  # two groups of two channel maps
    top = rates[:, :model.latent_dims[0]].numpy().reshape(3, 4, 2).sum(1)
    np.testing.assert_allclose(units[:, :2], top, rtol=1e-5)


def test_a_fresh_spatial_hierarchy_starts_near_its_prior():
    keras.utils.set_random_seed(0)
    model = builders.build_model((8, 8, 1), encoder="resnet", decoder="resnet",
                                 latent_groups="2x1,4x1", latent_channels=4,
                                 cell_channels=8)
    x = (np.random.default_rng(0).random((4, 8, 8, 1)) < 0.5).astype("float32")
    rate = model.elbo(x)["rate"].numpy()
    assert np.all(rate < 0.05 * sum(model.latent_dims))


def test_a_residual_cell_of_linear_1x1_convolutions_is_a_linear_map():
    cell = cells.ResidualCell(3, 2, kernel_size=1, activation=None)
    a, b = tf.random.normal([2, 4, 4, 3]), tf.random.normal([2, 4, 4, 3])
    cell.build(a.shape)
    np.testing.assert_allclose(cell(a + 2 * b) - cell(tf.zeros_like(a)),
                               (cell(a) - cell(tf.zeros_like(a)))
                               + 2 * (cell(b) - cell(tf.zeros_like(a))), atol=1e-4)


@pytest.mark.parametrize("spec, message", [
    ("7x2,3x2", "must divide"), ("14x2,7x2", "coarse"), ("7by2", "RxN"),
    ("0x1", "must divide")])
def test_bad_group_specs_get_one_line(spec, message):
    with pytest.raises(ValueError, match=message):
        blocks.parse_groups(spec, (28, 28, 1))


@pytest.mark.parametrize("layer", [
    cells.ResidualCell(4, 2),
    blocks.SpatialBlock((4, 4, 1), (2, 2), channels=4, latent_channels=2),
    blocks.ResNetEncoder((8, 8, 1), [(2, 2, 1), (4, 4, 1)], channels=4,
                         latent_channels=2),
    blocks.ResNetDecoder((8, 8, 1), (4, 4), channels=4, latent_channels=2),
])
def test_spatial_layers_round_trip_their_config(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# -- a spatial model end to end ------------------------------------------------------

@pytest.mark.slow
def test_a_spatial_model_fits_and_its_keras_file_round_trips(tmp_path):
    model = spatial_model(free_bits=0.1, num_classes=3, prior="conditional")
    model.compile(optimizer=builders.build_optimizer("adam", 1e-3, global_clipnorm=10.0,
                                                     skip_threshold=1e4))
    labels = np.arange(32) % 3
    history = model.fit({"images": binary(32), "labels": labels}, batch_size=8,
                        epochs=2, verbose=0).history
    np.testing.assert_allclose(history["rate"][-1],
                               history["rate/1"][-1] + history["rate/2"][-1], rtol=1e-4)
    model.save(tmp_path / "m.keras")
    clone = keras.saving.load_model(tmp_path / "m.keras")
    x = {"images": binary(4, seed=1), "labels": labels[:4]}
    np.testing.assert_allclose(clone.code(x), model.code(x), atol=1e-5)
    seed = tf.constant([1, 2])
    np.testing.assert_allclose(clone.log_importance_weights(x, 5, seed=seed),
                               model.log_importance_weights(x, 5, seed=seed), atol=1e-4)
    assert model.sample(3, labels=2).shape == (3, 8, 8, 1)


@pytest.mark.slow
@pytest.mark.parametrize("likelihood", ["bernoulli", "discretized_logistic"])
def test_saved_model_and_tflite_of_a_spatial_hierarchy(likelihood, tmp_path):
    # The discretized head's [..., None] slices over the decoder's maps (more than one
    # dynamic axis) once made the TFLite converter fail ("StridedSlice ... neither a
    # custom op nor a flex op"); they are ExpandDims now.
    from export_parity import check_export_parity
    from tfvae import export
    model = spatial_model(likelihood=likelihood)
    assert model.latent_dim == 2 * 2 * 2 + 4 * 4 * 2  # the groups' maps, flattened
    paths = export.export_model(model, str(tmp_path), name="spatial")
    check_export_parity(model, paths, binary(5))
