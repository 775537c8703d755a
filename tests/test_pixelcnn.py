"""The autoregressive Bernoulli likelihood (`pixelcnn.py`) against known answers.

* causality: d l_i / d x_j = 0 for every j >= i in raster order (a Jacobian), and
  l_i does depend on the pixel to its left and the one above it;
* normalization: on 2x2 and 2x3 images, sum over all 2^(HW) binary images of
  p(x|z) = 1, for random weights (the last layer too) and random features;
* sampling: frequencies of many samples on 2x2 images match exp(log_prob);
* mean: the greedy path's conditional probabilities, found by brute force;
* a fresh head is the factorized decoder, bit for bit, and loads its weights;
* a small spatial VAE with the head trains (float32 and bfloat16), keeps ELBO <=
  IWAE, round-trips as .keras and exports (SavedModel signatures and TFLite).
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae import blocks, builders, evaluate, export, pixelcnn, warmstart
from pattern_data import binary_images as binary
from tiny_models import tiny_spatial_model as spatial_model


def random_likelihood(image, layers=2, channels=8, hidden_channels=3, batch=2, seed=0):
    """An `AutoregressiveBernoulli` of batch [batch] with random weights (random
    biases, and the last layer's too: no zero start) and random b(z), h(z)."""
    keras.utils.set_random_seed(seed)
    net = pixelcnn.PixelCNN(layers, channels)
    net.build((None, *image), (None, *image[:2], hidden_channels))
    rng = np.random.default_rng(seed)
    for layer in (*net.masked, net.condition):
        layer.bias.assign(rng.normal(scale=0.5, size=layer.bias.shape))
    net.out.set_weights([rng.normal(size=(1, 1, channels, 1)) / np.sqrt(channels),
                         rng.normal(size=[1])])
    base = rng.normal(size=(batch, *image)).astype("float32")
    hidden = rng.normal(size=(batch, *image[:2], hidden_channels)).astype("float32")
    return pixelcnn.AutoregressiveBernoulli(base, hidden, net)


def all_binary_images(image):
    """[2^(H W), H, W, 1]: every binary image, in raster-order binary counting."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=int(np.prod(image)))),
                    np.float32).reshape(-1, *image)


def test_the_masks_keep_the_taps_before_the_centre():
    a, b = (pixelcnn.causal_mask(3, kind)[..., 0, 0] for kind in "AB")
    np.testing.assert_array_equal(a, [[1, 1, 1], [1, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(b, [[1, 1, 1], [1, 1, 0], [0, 0, 0]])


@pytest.mark.parametrize("size, kind", [(3, "A"), (3, "B"), (5, "A"), (5, "B")])
def test_the_masked_convolution_is_the_same_convolution_of_the_masked_kernel(size, kind):
    """It convolves only the kernel's rows down to the centre (the rows below are
    masked out): the result must be the full "same" convolution's, on any image."""
    layer = pixelcnn.MaskedConv2D(3, size, kind)
    images = np.random.default_rng(0).normal(size=(2, 6, 7, 2)).astype(np.float32)
    got = layer(images)
    kernel = layer.kernel * pixelcnn.causal_mask(size, kind)
    expected = tf.nn.conv2d(images, kernel, 1, "SAME") + layer.bias
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="stride-1"):
        pixelcnn.MaskedConv2D(3, size, kind, strides=2)


def test_each_logit_depends_on_the_pixels_before_it_only():
    height, width = 4, 5
    likelihood = random_likelihood((height, width, 1), layers=3, batch=1)
    x = tf.constant(np.random.default_rng(1).normal(size=(1, height, width, 1)),
                    tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = likelihood.conditional_logits(x)
    size = height * width
    jacobian = tape.jacobian(logits, x).numpy().reshape(size, size)  # [i, j]
    assert np.all(jacobian[np.triu_indices(size)] == 0.0)  # j >= i
    for i in range(size):
        row, col = divmod(i, width)
        if col:
            assert jacobian[i, i - 1] != 0.0, (row, col)  # the pixel to the left
        if row:
            assert jacobian[i, i - width] != 0.0, (row, col)  # the pixel above


@pytest.mark.parametrize("image", [(2, 2, 1), (2, 3, 1)])
def test_probabilities_of_all_binary_images_sum_to_one(image):
    likelihood = random_likelihood(image)
    images = all_binary_images(image)[:, None]  # [2^HW, 1, H, W, 1] against batch [2]
    log_p = likelihood.log_prob(images).numpy()
    assert log_p.shape == (len(images), 2) and log_p.dtype == np.float32
    np.testing.assert_allclose(tf.reduce_logsumexp(log_p, axis=0), 0.0, atol=1e-5)
    assert log_p.std(axis=0).min() > 0.1  # not uniform: the test has teeth


@pytest.mark.parametrize("seed", [7, None])  # None: tf.random.uniform, as in TFLite
def test_sample_frequencies_match_the_probabilities(seed):
    likelihood = random_likelihood((2, 2, 1), batch=1)
    images = all_binary_images((2, 2, 1))
    p = np.exp(likelihood.log_prob(images[:, None]).numpy()[:, 0])
    draws = 20_000
    samples = likelihood.sample(draws, seed=seed).numpy().reshape(draws, 4)
    assert set(np.unique(samples)) <= {0.0, 1.0}
    index = samples @ np.array([8, 4, 2, 1])  # the row of `images`
    frequency = np.bincount(index.astype(int), minlength=16) / draws
    stderr = np.sqrt(p * (1 - p) / draws)
    assert np.all(np.abs(frequency - p) < 4.5 * stderr + 1e-4), (frequency, p)


def test_each_drawn_pixel_follows_its_logit_given_the_pixels_before_it():
    """The loop's windows (reach 3 on a 6x7 image: inside, at the edges and beyond
    them) against one pass of the net over the whole drawn image: the same logits,
    and each pixel drawn by its own."""
    likelihood = random_likelihood((6, 7, 1), layers=3, batch=4, seed=2)
    u = np.random.default_rng(3).random((4, 6, 7, 1)).astype("float32")
    x, logits = likelihood.path(tf.constant(u))
    np.testing.assert_allclose(logits, likelihood.conditional_logits(x), atol=1e-5)
    np.testing.assert_array_equal(x, (u < tf.sigmoid(logits)).numpy())
    assert 0.0 < x.numpy().mean() < 1.0


def test_the_mean_is_the_probabilities_along_the_greedy_path():
    likelihood = random_likelihood((2, 3, 1), batch=2)
    path = np.zeros((2, 6), np.float32)
    for i in range(6):  # brute force: one pixel at a time, for both rows of the batch
        logits = likelihood.conditional_logits(path.reshape(2, 2, 3, 1)).numpy()
        path[:, i] = logits.reshape(2, 6)[:, i] > 0.0
    mean = likelihood.mean().numpy()
    np.testing.assert_allclose(mean, tf.sigmoid(likelihood.conditional_logits(
        path.reshape(2, 2, 3, 1))), atol=1e-5)
    np.testing.assert_array_equal(mean.reshape(2, 6) > 0.5, path > 0.5)


def test_more_than_one_channel_or_a_gaussian_is_refused_in_one_line():
    with pytest.raises(ValueError, match="one channel; got 3"):
        blocks.ResNetDecoder((8, 8, 3), (4, 4), autoregressive_layers=2)
    with pytest.raises(ValueError, match="needs likelihood='bernoulli'"):
        blocks.ResNetDecoder((8, 8, 1), (4, 4), likelihood="gaussian",
                             autoregressive_layers=2)
    with pytest.raises(ValueError, match="needs the spatial decoder"):
        builders.build_model((8, 8, 1), autoregressive_layers=2)
    for options, words in (({"autoregressive_layers": 1000}, "autoregressive_layers"),
                           ({"autoregressive_layers": 2, "autoregressive_channels": 0},
                            "autoregressive_channels")):
        with pytest.raises(ValueError, match=words):
            builders.build_model((8, 8, 1), encoder="resnet", decoder="resnet",
                                 latent_groups="2x1,4x1", **options)


@pytest.mark.parametrize("layer", [
    pixelcnn.MaskedConv2D(4, 3, "A"),
    pixelcnn.PixelCNN(3, 8, kernel_size=5),
    blocks.ResNetDecoder((8, 8, 1), (4, 4), channels=4, latent_channels=2,
                         autoregressive_layers=2, autoregressive_channels=6),
])
def test_the_layers_round_trip_their_config(layer):
    clone = type(layer).from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


# -- the head on a decoder and a model -------------------------------------------------

def decoders():
    """(factorized, autoregressive) ResNetDecoders holding the same weights."""
    options = dict(channels=4, latent_channels=2)
    plain = blocks.ResNetDecoder((8, 8, 1), (4, 4), **options)
    head = blocks.ResNetDecoder((8, 8, 1), (4, 4), autoregressive_layers=2, **options)
    plain.build(), head.build()
    for source, target in zip(plain.weights, head.weights):
        assert source.path.split("/", 1)[1] == target.path.split("/", 1)[1]
        target.assign(source.value)
    return plain, head


def test_a_fresh_head_is_the_factorized_decoder_exactly():
    plain, head = decoders()
    z = tf.random.normal([3, 2, 4, 4, 6])  # k = 3 samples of B = 2 codes
    x = binary(2)
    expected = plain(z).log_prob(x)
    assert expected.shape == (3, 2)
    np.testing.assert_array_equal(head(z).log_prob(x), expected)
    np.testing.assert_array_equal(head(z).mean(), plain(z).mean())


def autoregressive_model():
    return spatial_model(autoregressive_layers=2, autoregressive_channels=4)


def test_a_model_with_the_head_starts_from_the_weights_of_one_without(tmp_path):
    plain = spatial_model()
    plain.compile(optimizer=keras.optimizers.Adam(1e-2))
    plain.fit(binary(16), batch_size=8, epochs=1, verbose=0)
    plain.save(tmp_path / "plain.keras")
    model = autoregressive_model()
    report = warmstart.warm_start(model, str(tmp_path / "plain.keras"))
    head = {warmstart.relative_path(w, model) for w in model.decoder.autoregressive.weights}
    assert set(report.new) == head  # only the head keeps its (zero) start
    assert not report.skipped and not report.unused
    seed = tf.constant([4, 5])
    np.testing.assert_array_equal(model.log_importance_weights(binary(4), 3, seed=seed),
                                  plain.log_importance_weights(binary(4), 3, seed=seed))


@pytest.fixture(scope="module")
def trained():
    model = autoregressive_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(binary(32), batch_size=8, epochs=2, verbose=0).history
    return model, history


def test_a_model_with_the_head_trains_and_its_head_leaves_zero(trained):
    model, history = trained
    assert np.all(np.isfinite(history["loss"]))
    assert np.any(model.decoder.autoregressive.out.get_weights()[0] != 0.0)


@pytest.mark.slow
def test_mixed_bfloat16_trains_with_float32_log_probs():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = autoregressive_model()
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        history = model.fit(binary(16), batch_size=8, epochs=1, verbose=0).history
        log_w = model.log_importance_weights(binary(2), 2)
        images = model.sample(2)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert np.all(np.isfinite(history["loss"]))
    assert log_w.dtype == tf.float32 and images.dtype == tf.float32
    assert model.decoder.autoregressive.masked[0].compute_dtype == "bfloat16"


def test_the_elbo_stays_below_the_iwae_bound(trained):
    model, _ = trained
    x, k = binary(6, seed=2), 200
    log_w = model.log_importance_weights(x, k, seed=tf.constant([0, 1])).numpy()
    iwae = tf.reduce_logsumexp(log_w, axis=0).numpy() - np.log(k)
    assert np.all(log_w.mean(axis=0) <= iwae)  # the same draws: Jensen
    elbo = model.elbo(x, num_samples=k, seed=tf.constant([2, 3]))["elbo"].numpy()
    assert np.all(elbo <= iwae + 3 * log_w.std(axis=0) / np.sqrt(k))


def test_the_keras_file_round_trips(trained, tmp_path):
    model, _ = trained
    model.save(tmp_path / "m.keras")
    clone = keras.saving.load_model(tmp_path / "m.keras")
    seed, x = tf.constant([1, 2]), binary(4, seed=1)
    np.testing.assert_allclose(clone.log_importance_weights(x, 5, seed=seed),
                               model.log_importance_weights(x, 5, seed=seed), atol=1e-4)
    z = np.random.default_rng(0).normal(size=(3, model.latent_dim)).astype("float32")
    np.testing.assert_allclose(clone.decode(z).mean(), model.decode(z).mean(), atol=1e-5)


@pytest.mark.slow
def test_saved_model_and_tflite_sample_of_the_head(trained, tmp_path):
    from export_parity import check_export_parity
    model, _ = trained
    paths = export.export_model(model, str(tmp_path), name="pixelcnn")
    loaded = tf.saved_model.load(paths["saved_model"]).signatures
    sampled = loaded["sample"](num_samples=tf.constant(3))
    images = sampled["images"].numpy()
    assert images.shape == (3, 8, 8, 1) and np.all((images >= 0) & (images <= 1))
    check_export_parity(model, paths, binary(5))
    from tools.samplers import load_sampler
    for path in (paths["saved_model"], paths["tflite_float32"]):  # ancestral draws
        draws = load_sampler(path).sample(200, draws=True)
        assert draws.shape == (200, 8, 8, 1) and set(np.unique(draws)) == {0.0, 1.0}
        assert len(np.unique(draws.reshape(200, -1), axis=0)) > 1  # not one path
    assert "ancestral draws" in export.signature_summary(model)["sample"]
    judged = evaluate.saved_model_functions(tf.saved_model.load(paths["saved_model"]))
    assert set(np.unique(judged["sample"](50).numpy())) == {0.0, 1.0}  # not the means


@pytest.mark.slow
def test_the_trainer_warm_starts_the_head_from_a_factorized_run(tmp_path):
    """--autoregressive_layers through the trainer: a run with the head starts from
    a factorized run's model.keras, logs sampled images and exports (TFLite too)."""
    import tensorflow_datasets as tfds
    from tfvae import train
    tiny = ["--dataset=mnist", "--binarization=dynamic", "--validation_split=test",
            "--encoder=resnet", "--decoder=resnet", "--latent_groups=7x1,14x1",
            "--latent_channels=2", "--cell_channels=8", "--batch_size=16", "--epochs=1",
            "--verbose=0", "--nojit_compile"]
    with tfds.testing.mock_data(num_examples=32):
        train.run(["tfvae.train", *tiny, "--noexport", "--nolog_images",
                   f"--output_dir={tmp_path / 'plain'}"])
        metrics = train.run(["tfvae.train", *tiny, "--autoregressive_layers=2",
                             "--autoregressive_channels=4",
                             f"--init_from={tmp_path / 'plain' / 'model.keras'}",
                             f"--output_dir={tmp_path / 'head'}",
                             f"--export_dir={tmp_path / 'exports'}", "--export_name=ar"])
    assert np.isfinite(metrics["test"]["elbo"])
    new = metrics["warm_start"]["new"]
    assert new and all(path.startswith("decoder/autoregressive/") for path in new)
    assert (tmp_path / "exports" / "ar" / "1" / "ar.tflite").exists()
    model = keras.saving.load_model(tmp_path / "head" / "model.keras")
    assert model.decoder.autoregressive_layers == 2
