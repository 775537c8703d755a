"""Classifier-free guidance (`tfvae/guidance.py`): label dropout in training, the
guided draws' and images' known answers at zero temperature, the exports'
`sample_guided`."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae import checks, export
from tfvae.conditioning import Conditioning
from tfvae.guidance import GuidedLikelihood, guided_likelihood
from tiny_models import tiny_spatial_model

COLD = 1e-6  # a temperature at which every draw is its Gaussian's mean


def guided_model(**options):
    """A spatial hierarchy of three classes trained (untrained: seeded weights) with
    label dropout, conditional prior on top."""
    return tiny_spatial_model(num_classes=3, prior="conditional", context_dropout=0.2,
                              **options)


def test_dropped_context_zeroes_rows_at_the_rate_and_keeps_the_others():
    tf.random.set_seed(0)
    context = tf.one_hot(np.arange(20000) % 3, 3)
    dropped = Conditioning(num_classes=3).dropped(context, 0.3).numpy()
    zero = ~dropped.any(axis=1)
    assert abs(zero.mean() - 0.3) < 0.015  # s.e. 0.003
    np.testing.assert_array_equal(dropped[~zero], context.numpy()[~zero])


def expected_cold_codes(model, label, weight):
    """The guided codes at zero temperature, walked by hand: each layer's conditional
    mean plus `weight` times its difference from the null context's, both given the
    same codes above."""
    given, null = tf.one_hot([label], 3), tf.zeros([1, 3])
    z = None
    codes, states = [], {"given": None, "null": None}
    for index in range(model.num_layers):
        means = {}
        for name, context in (("given", given), ("null", null)):
            if index == 0:
                prior = model.prior_distribution(context)
            else:
                block = model.top_down[index - 1]
                states[name] = block.state(z, states[name], context)
                prior = block.prior_distribution(states[name])
            means[name] = prior.mean()
        z = means["given"] + weight * (means["given"] - means["null"])
        codes.append(z)
    return np.concatenate(codes, axis=-1)


@pytest.mark.parametrize("weight", [0.0, 1.5])
def test_guided_codes_at_zero_temperature_are_the_extrapolated_means(weight):
    model = guided_model()
    _, codes = model.sample(2, labels=[1, 1], temperature=COLD, guidance=weight or 1e-9,
                            return_codes=True)
    expected = expected_cold_codes(model, 1, weight)
    np.testing.assert_allclose(codes, np.repeat(expected, 2, axis=0), atol=1e-4)
    if weight:  # guidance moves the codes off the conditional prior's means
        _, plain = model.sample(1, labels=[1], temperature=COLD, return_codes=True)
        assert np.abs(plain - expected).max() > 1e-3


@pytest.mark.parametrize("image_weight", [0.0, 2.0])
def test_guided_images_at_zero_temperature_extrapolate_the_decoder_means(image_weight):
    """On the guided codes, the image is x_y + v (x_y - x_0): the decoder's means given
    the label and given none, computed by hand from the codes."""
    model = guided_model()
    z = tf.constant(expected_cold_codes(model, 1, 1.5), tf.float32)
    given = model._decode(z, tf.one_hot([1], 3)).mean().numpy()
    null = model._decode(z, tf.zeros([1, 3])).mean().numpy()
    expected = np.clip(given + image_weight * (given - null), 0, 1)
    images = model.sample(2, labels=[1, 1], temperature=COLD,
                          guidance=(1.5, image_weight)).numpy()
    np.testing.assert_allclose(images, np.repeat(expected, 2, axis=0), atol=1e-4)
    if image_weight:  # the label changes the rendering of the same codes
        assert np.abs(images[0] - given[0]).max() > 1e-3


class FixedLikelihood:
    """A stand-in likelihood over both halves: fixed means and draws."""

    def __init__(self, means, draws):
        self.means, self.draws = tf.constant(means), tf.constant(draws)

    def mean(self):
        return self.means

    def sample(self):
        return self.draws


@pytest.mark.parametrize("kind, expected_mean, expected_draws", [
    ("discretized_logistic", [0.9, 0.0], [1.0, 28 / 255]),
    ("bernoulli", [0.9, 0.0], [1.0, 0.11]),
    ("gaussian", [0.9, -0.4], [1.2, 0.11]),
])
def test_guided_likelihood_moves_means_and_draws_by_v_times_the_label_s_effect(
        kind, expected_mean, expected_draws):
    # Two images of one pixel: given y (0.5, 0.2), given none (0.3, 0.5); v = 2 moves
    # them by (0.4, -0.6); the draws given y (0.8, 0.71) alike, into [0, 1] but for a
    # Gaussian, and onto the 256 levels for 8-bit data (0.11 * 255 = 28.05).
    likelihood = FixedLikelihood([0.5, 0.2, 0.3, 0.5], [0.8, 0.71, 0.0, 0.0])
    guided = GuidedLikelihood(likelihood, 2.0, kind)
    np.testing.assert_allclose(guided.mean(), expected_mean, atol=1e-6)
    np.testing.assert_allclose(guided.sample(), expected_draws, atol=1e-6)


def test_guided_draws_keep_the_conditional_scale():
    """At w > 0 and t = 1, the top codes spread around the guided mean with the scale
    of p(z|y)."""
    model = guided_model()
    tf.random.set_seed(1)
    _, codes = model.sample(4000, labels=2, guidance=2.0, return_codes=True)
    top = model.latent_dims[0]
    prior = model.prior_distribution(tf.one_hot([2], 3))
    np.testing.assert_allclose(codes[:, :top].numpy().std(axis=0),
                               prior.stddev().numpy()[0], rtol=0.06)


def test_guidance_is_refused_where_it_has_no_meaning():
    plain = tiny_spatial_model(num_classes=3, prior="conditional")
    with pytest.raises(checks.InputError, match="trained with --context_dropout"):
        plain.sample(2, labels=0, guidance=1.0)
    for bad in (-1.0, (0.5, -1.0), (0.5, float("nan")), (1, 2, 3), "much"):
        with pytest.raises(checks.InputError, match="guidance must be a number >= 0"):
            guided_model().sample(2, labels=0, guidance=bad)
    with pytest.raises(ValueError, match="for a class-conditional model only"):
        tiny_spatial_model(context_dropout=0.1)
    with pytest.raises(ValueError, match=r"in \[0, 1\)"):
        tiny_spatial_model(num_classes=3, context_dropout=1.0)


def test_label_dropout_teaches_the_model_p_x_beside_p_x_given_y():
    """Two classes, the top or the bottom half lit: trained with label dropout, the
    null context draws both kinds (p(x)), each label draws its own half, and guidance
    keeps it there."""
    from test_conditional import build, two_classes

    keras.utils.set_random_seed(0)
    images, labels = two_classes(1024)
    model = build(prior="conditional", context_dropout=0.3)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit({"images": images, "labels": labels}, batch_size=64, epochs=30, verbose=0)
    unconditional, _ = guided_likelihood(model, 400, tf.zeros([400, 2]), [1.0], 0.0)
    top_lit = unconditional.mean().numpy()[:, :4].mean(axis=(1, 2, 3)) > 0.5
    assert 0.25 < top_lit.mean() < 0.75
    for weight in (0.0, 2.0):
        samples = model.sample(200, labels=1, guidance=weight).numpy()
        assert samples[:, 4:].mean() > 0.8 and samples[:, :4].mean() < 0.2


@pytest.fixture(scope="module")
def guided_export(tmp_path_factory):
    model = guided_model()
    paths = export.export_model(model, str(tmp_path_factory.mktemp("guided")), "cvae",
                                tflite=("float32",))
    return model, paths


@pytest.mark.slow
def test_exports_sample_guided_with_the_model_s_known_answer(guided_export):
    from ai_edge_litert.interpreter import Interpreter
    from tools.samplers import load_sampler

    model, paths = guided_export
    cold = np.full([model.num_layers], COLD, np.float32)
    expected = np.repeat(expected_cold_codes(model, 2, 1.5), 3, axis=0)
    images = model.sample(3, labels=2, temperature=COLD, guidance=(1.5, 2.0)).numpy()
    inputs = dict(num_samples=np.array(3, np.int32), temperature=cold,
                  guidance=np.array(1.5, np.float32),
                  image_guidance=np.array(2.0, np.float32), labels=np.array([2], np.int32))
    loaded = tf.saved_model.load(paths["saved_model"]).signatures
    runner = Interpreter(model_path=paths["tflite_float32"]).get_signature_runner(
        "sample_guided")
    for sample in (loaded["sample_guided"], runner):
        outputs = sample(**inputs)
        np.testing.assert_allclose(np.asarray(outputs["z"]), expected, atol=1e-4)
        np.testing.assert_allclose(np.asarray(outputs["images"]), images, atol=1e-4)
    for path in (paths["saved_model"], paths["tflite_float32"]):
        sampler = load_sampler(path)
        assert sampler.num_layers == model.num_layers and sampler.guided
        np.testing.assert_allclose(sampler.sample(3, [2], COLD, guidance=(1.5, 2.0)),
                                   images, atol=1e-4)
        for bad in (-0.5, (0.5, -0.5)):
            with pytest.raises(checks.InputError, match="guidance must be a number >= 0"):
                sampler.sample(3, [2], guidance=bad)


@pytest.mark.slow
@pytest.mark.parametrize("signature, inputs, expected", [
    ("sample_guided", dict(guidance=-1.0), "guidance must be a number >= 0"),
    ("sample_guided", dict(image_guidance=np.inf), "image_guidance must be a number >= 0"),
    ("sample_guided", dict(temperature=[1.0, 1.0, 1.0]), "temperature must be 2 positive"),
    ("sample_at_temperature", dict(temperature=[1.0]), "temperature must be 2 positive"),
])
def test_the_saved_model_refuses_bad_guidance_and_temperatures_in_one_line(
        guided_export, signature, inputs, expected):
    loaded = tf.saved_model.load(guided_export[1]["saved_model"]).signatures
    call = dict(num_samples=tf.constant(2), temperature=tf.constant([1.0, 1.0]),
                labels=tf.constant([0]))
    if signature == "sample_guided":
        call.update(guidance=tf.constant(1.0), image_guidance=tf.constant(1.0))
    call.update({key: tf.constant(value, tf.float32) for key, value in inputs.items()})
    with pytest.raises(tf.errors.InvalidArgumentError, match=expected):
        loaded[signature](**call)


def test_a_model_without_label_dropout_exports_no_guided_signature():
    module = export.serving_module(tiny_spatial_model(num_classes=3, prior="conditional"))
    assert "sample_guided" not in export.signatures(module)
    assert "sample_at_temperature" in export.signatures(module)


@pytest.mark.slow
def test_tools_sample_and_label_consistency_take_guidance_in_one_line(guided_export,
                                                                      tmp_path):
    from test_conditional import _cli

    model, paths = guided_export
    plain = export.export_model(tiny_spatial_model(num_classes=3, prior="conditional"),
                                str(tmp_path / "plain"), "plain", tflite=())
    out = f"--output={tmp_path / 'guided.png'}"
    shipped_v5 = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
        __file__))), "saved_models", "cvae_fashion_mnist", "5")  # codes' guidance only
    cases = {
        "guided": ([paths["tflite_float32"], "--labels=all", "--guidance=1.5,2", out],
                   None),
        "negative": ([paths["saved_model"], "--guidance=-1", out],
                     "--guidance must be a number >= 0"),
        "negative image weight": ([paths["saved_model"], "--guidance=1,-1", out],
                                  "--guidance must be a number >= 0"),
        "three weights": ([paths["saved_model"], "--guidance=1,1,1", out],
                          "--guidance must be a number >= 0"),
        "unguided model": ([plain["saved_model"], "--guidance=1", out],
                           "has no sample_guided signature"),
        "export before image guidance": ([shipped_v5, "--labels=all", "--guidance=0.5,3",
                                          out], "exported before image guidance"),
    }
    results = _cli("tools.sample", [args for args, _ in cases.values()], tmp_path)
    for (name, (_, words)), result in zip(cases.items(), results):
        if words is None:
            assert result["code"] == 0 and os.path.isfile(tmp_path / "guided.png"), (
                name, result["stderr"][-2000:])
            continue
        lines = result["stderr"].strip().splitlines()
        assert result["code"] == 1 and len(lines) == 1 and words in lines[0], (
            name, result["stderr"][-2000:])
    [refused] = _cli("tools.label_consistency", [[plain["keras"], "--guidance=2"]],
                     tmp_path)
    assert refused["code"] == 1 and "trained with --context_dropout" in refused["stderr"]
