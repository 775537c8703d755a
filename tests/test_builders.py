"""The builders (`builders.py`): each option builds what it says, and combinations
without a meaning are refused in one line before anything is built.

* build_model: networks, sizes, heads, priors, hierarchies (vector and spatial,
  with the cells' initial scale 1 / sqrt(number of cells)), the context and the
  objective's flat options land in the layers they name;
* MODEL_DEFAULTS: every option once, with build_model's and VAE's defaults;
* build_learning_rate: the schedules' values at known steps;
* build_optimizer: clipping, the EMA warm-up (by hand) and the skipping of outliers;
* build_strategy and is_chief: the strategy by name, the chief of a cluster.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfvae import blocks, builders, heads, losses, networks, priors
from tfvae.checks import InputError
from tfvae.hierarchy import TopDownBlock
from tiny_models import tiny_vae

IMAGE = (8, 8, 1)
SMALL = dict(latent_dim=3, encoder_hidden_units=(16,), decoder_hidden_units=(12,),
             top_down_hidden_units=(8,))


def build(**options):
    return builders.build_model(IMAGE, **{**SMALL, **options})


def assert_refused_in_one_line(words, function, *args, **kwargs):
    with pytest.raises(ValueError) as error:
        function(*args, **kwargs)
    assert words in str(error.value) and "\n" not in str(error.value)


# -- build_model: what each option builds ---------------------------------------------

def test_the_default_is_the_mlp_vae_of_kingma_and_welling():
    model = builders.build_model((28, 28, 1))
    assert type(model.encoder) is networks.MLPEncoder
    assert type(model.decoder) is networks.MLPDecoder
    assert model.encoder.hidden_units == model.decoder.hidden_units == (500, 500)
    assert model.latent_dims == (50,) and model.decoder.likelihood == "bernoulli"
    assert type(model.prior) is priors.StandardNormalPrior
    assert type(model.training_objective) is losses.ELBO and model.num_samples == 1
    assert model.name == "vae" and not model.top_down


def test_network_options_reach_the_layers():
    model = build(activation="tanh", dropout=0.25, likelihood="gaussian")
    assert model.encoder.hidden_units == (16,) and model.decoder.hidden_units == (12,)
    assert model.encoder.activation == model.decoder.activation == "tanh"
    assert model.encoder.dropout == model.decoder.dropout == 0.25
    assert model.decoder.likelihood == "gaussian"
    conv = build(encoder="conv", decoder="conv", encoder_filters=(4, 6),
                 decoder_filters=(6, 4))
    assert type(conv.encoder) is networks.ConvEncoder
    assert type(conv.decoder) is networks.ConvDecoder
    assert conv.encoder.filters == (4, 6) and conv.decoder.filters == (6, 4)
    assert [layer.filters for layer in conv.encoder.convs] == [4, 6]


def test_a_hierarchy_has_one_block_per_lower_layer_and_every_head_is_the_posterior():
    model = build(top_down_latent_dims=(4, 2), posterior="iaf", flow_steps=3,
                  flow_hidden_units=5)
    assert model.latent_dims == (3, 4, 2) and model.latent_dim == 9
    assert [type(b) for b in model.top_down] == [TopDownBlock, TopDownBlock]
    assert [b.hidden_units for b in model.top_down] == [(8,), (8,)]
    for head in (model.encoder.head, *(b.posterior_head for b in model.top_down)):
        assert type(head) is heads.IAFPosterior
        assert (head.flow_steps, head.flow_hidden_units) == (3, 5)
    for block in model.top_down:  # the priors of lower layers stay Gaussian
        assert type(block.prior_head) is heads.GaussianPosterior


@pytest.mark.parametrize("prior, components, cls, size", [
    ("standard_normal", 0, priors.StandardNormalPrior, None),
    ("mixture", 0, priors.MixturePrior, 10),
    ("mixture", 3, priors.MixturePrior, 3),
    ("vampprior", 0, priors.VampPrior, 500),
    ("vampprior", 4, priors.VampPrior, 4),
])
def test_each_prior_by_name_with_its_default_size(prior, components, cls, size):
    model = build(prior=prior, prior_components=components)
    assert type(model.prior) is cls
    assert getattr(model.prior, "num_components",
                   getattr(model.prior, "num_pseudo_inputs", None)) == size
    if cls is priors.VampPrior:
        assert model.prior.image_shape == IMAGE


@pytest.mark.parametrize("context", [dict(num_classes=3), dict(context_dim=3)])
def test_a_context_reaches_the_encoder_the_decoder_and_a_conditional_prior(context):
    model = build(prior="conditional", top_down_latent_dims=(2,), **context)
    assert model.context_width == 3 and model.encoder.context_dim == 3
    assert type(model.prior) is priors.ConditionalPrior and model.prior.context_dim == 3
    assert model.decoder.hidden[0].kernel.shape[0] == 2 + 8 + 3  # [z_1, h_1, c]


def test_the_flat_objective_options_make_the_loss():
    model = build(objective="iwae", gradient_estimator="dreg", num_samples=4, kl="sampled")
    assert type(model.training_objective) is losses.IWAE
    assert model.training_objective.gradient_estimator == "dreg"
    assert model.num_samples == 4 and model.kl == "sampled"
    elbo = build(beta=0.5, free_bits=0.25, kl_warmup_steps=7).training_objective
    assert (elbo.beta, elbo.free_bits, elbo.kl_warmup_steps) == (0.5, 0.25, 7)


def test_a_spatial_hierarchy_is_one_group_per_entry_with_cells_scaled_by_their_count():
    model = builders.build_model((28, 28, 1), encoder="resnet", decoder="resnet",
                                 latent_groups="7x2,14x3", latent_channels=2,
                                 cell_channels=8, cell_bottleneck=3, output_cells=2)
    assert type(model.encoder) is blocks.ResNetEncoder
    assert type(model.decoder) is blocks.ResNetDecoder
    assert [type(b) for b in model.top_down] == [blocks.SpatialBlock]
    assert model.latent_dims == (7 * 7 * 2, 14 * 14 * 2)
    num_cells = 2 * (2 + 3) + 2  # up and down through each group, and the output's
    for layer in (model.encoder, *model.top_down, model.decoder):
        assert (layer.num_cells, layer.channels, layer.bottleneck) == (num_cells, 8, 3)
    assert [len(stage) for stage in model.encoder.stages] == [3, 2]  # bottom first
    assert len(model.top_down[0].stage) == 3 and len(model.decoder.stage) == 2
    assert model.decoder.autoregressive is None
    pixel = builders.build_model((8, 8, 1), encoder="resnet", decoder="resnet",
                                 latent_groups="2x1,4x1", latent_channels=2,
                                 cell_channels=4, autoregressive_layers=3,
                                 autoregressive_channels=5)
    assert (pixel.decoder.autoregressive.num_layers,
            pixel.decoder.autoregressive.channels) == (3, 5)


def test_model_defaults_list_every_option_once_with_its_default():
    defaults = builders.MODEL_DEFAULTS
    assert defaults["latent_dim"] == 50 and defaults["encoder"] == "mlp"
    assert defaults["num_samples"] == 1 and defaults["kl"] == "auto"
    assert defaults["objective"] == "elbo" and defaults["beta"] == 1.0
    assert not set(builders.CONTEXT_ARGUMENTS) & set(defaults)
    assert set(builders.keyword_defaults(builders.build_model)) - set(defaults) == set(
        builders.CONTEXT_ARGUMENTS)
    assert set(losses.FLAT_OPTIONS) <= set(defaults)


# -- build_model: what is refused ---------------------------------------------------------

RESNET = dict(encoder="resnet", decoder="resnet")


@pytest.mark.parametrize("options, words", [
    (dict(encoder="transformer"), "Unknown encoder 'transformer'"),
    (dict(prior="flow"), "Unknown prior 'flow'"),
    (dict(posterior="realnvp"), "Unknown posterior 'realnvp'"),
    (dict(learning_rate=0.1), "Unknown model option(s) learning_rate"),
    (dict(encoder_hidden_units="5,x"), "encoder_hidden_units must be a list of integers"),
    (dict(latent_dim=10 ** 5), "latent_dim must be a positive integer (at most 8192)"),
    (dict(flow_steps=65, posterior="iaf"), "flow_steps must be a positive integer"),
    (dict(decoder_hidden_units=[8] * 65), "decoder_hidden_units lists 65 layers"),
    (dict(encoder="conv", dropout=0.1), "dropout applies to MLP encoders and decoders"),
    (dict(prior="conditional"), "prior='conditional' is p(z|c): it needs a conditional"),
    (dict(autoregressive_layers=2), "autoregressive_layers needs the spatial decoder"),
    (dict(objective="iwae", beta=2.0), "apply to objective='elbo' only"),
    # Spatial hierarchies (the cases of test_blocks before this file).
    (dict(encoder="resnet", latent_groups="2x1,4x1"), "go together"),
    (dict(RESNET, latent_groups="4x1"), "two groups"),
    (dict(RESNET, latent_groups="2x1,4x1", posterior="iaf"), "Gaussian posterior"),
    (dict(RESNET), "needs latent_groups"),
    (dict(RESNET, latent_groups="2x1,4x1", top_down_latent_dims=(3,)),
     "leave top_down_latent_dims empty"),
], ids=lambda value: None if isinstance(value, dict) else value[:30])
def test_bad_options_are_refused_in_one_line(options, words):
    assert_refused_in_one_line(words, build, **options)


@pytest.mark.parametrize("options, words", [
    ({"cell_channels": 5000}, "cell_channels"), ({"latent_channels": 0}, "latent_channels"),
    ({"output_cells": 1000}, "output_cells"), ({"cell_bottleneck": -3}, "cell_bottleneck"),
    ({"latent_groups": "7x100,14x1"}, "cells per group")])
def test_spatial_sizes_are_bounded_before_anything_is_built(options, words):
    options = {"encoder": "resnet", "decoder": "resnet", "latent_groups": "7x1,14x1",
               **options}
    with pytest.raises(ValueError, match=words):
        builders.build_model((28, 28, 1), **options)


def test_sizes_are_checked_before_any_layer_is_made(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a layer was made")

    monkeypatch.setattr(builders, "MLPEncoder", refuse)
    with pytest.raises(InputError, match="flow_hidden_units"):
        build(flow_hidden_units=10 ** 6)


# -- learning rates --------------------------------------------------------------------

def test_the_schedules_at_known_steps():
    assert builders.build_learning_rate(0.01) == 0.01
    cosine = builders.build_learning_rate(0.1, "cosine", total_steps=100)
    assert [float(cosine(step)) for step in (0, 50, 100)] == pytest.approx(
        [0.1, 0.05, 0.0], abs=1e-7)
    exponential = builders.build_learning_rate(0.1, "exponential", steps_per_epoch=40,
                                               decay_rate=0.5, decay_epochs=2.0)
    assert float(exponential(80)) == pytest.approx(0.05)  # one decay every 2 epochs
    assert float(exponential(160)) == pytest.approx(0.025)
    assert float(exponential(40)) == pytest.approx(0.1 * 0.5 ** 0.5)  # smooth


@pytest.mark.parametrize("args, kwargs, words", [
    ((0.0,), {}, "learning_rate must be > 0, got 0.0"),
    ((0.1, "step"), {}, "Unknown lr_schedule 'step'"),
    ((0.1, "cosine"), {}, "'cosine' needs the number of training steps"),
    ((0.1, "exponential"), {}, "'exponential' needs steps per epoch"),
    ((0.1, "exponential"), dict(steps_per_epoch=10, decay_epochs=0), "lr_decay_epochs > 0"),
])
def test_bad_schedules_are_refused_in_one_line(args, kwargs, words):
    assert_refused_in_one_line(words, builders.build_learning_rate, *args, **kwargs)


# -- optimizers -------------------------------------------------------------------------

def test_plain_options_give_the_plain_keras_optimizer():
    optimizer = builders.build_optimizer("rmsprop", 0.01, clipnorm=2.0)
    assert type(optimizer) is keras.optimizers.RMSprop
    assert optimizer.clipnorm == 2.0 and optimizer.global_clipnorm is None
    assert not optimizer.use_ema
    clipped = builders.build_optimizer("sgd", 0.01, global_clipnorm=3.0)
    assert clipped.global_clipnorm == 3.0 and clipped.clipnorm is None
    averaged = builders.build_optimizer("adamax", 0.01, use_ema=True, ema_momentum=0.9)
    assert isinstance(averaged, keras.optimizers.Adamax)
    assert isinstance(averaged, builders.EMAWarmup) and averaged.ema_momentum == 0.9


@pytest.mark.parametrize("kwargs, words", [
    (dict(name="lamb"), "Unknown optimizer 'lamb'"),
    (dict(clipnorm=1.0, global_clipnorm=1.0), "Give clipnorm (per tensor) or "
     "global_clipnorm, not both."),
    (dict(skip_threshold=-1.0), "skip_threshold must be >= 0, got -1.0"),
])
def test_bad_optimizer_options_are_refused_in_one_line(kwargs, words):
    assert_refused_in_one_line(words, builders.build_optimizer, **kwargs)


def test_clipping_a_gradient_to_a_global_norm():
    weights = [keras.Variable([0.0, 0.0]), keras.Variable([0.0])]
    optimizer = builders.build_optimizer("sgd", 1.0, global_clipnorm=1.0)
    optimizer.apply([tf.constant([3.0, 0.0]), tf.constant([4.0])], weights)  # norm 5
    np.testing.assert_allclose(weights[0].numpy(), [-0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(weights[1].numpy(), [-0.8], rtol=1e-6)


def test_the_weight_average_warms_up():
    """average_t = d_t average_{t-1} + (1 - d_t) w_t, d_t = min(m, (1 + t) / (10 + t)),
    d_0 = 0; without the warm-up, 20 steps at m = 0.999 would leave 98% of w_0."""
    optimizer = builders.build_optimizer("adam", 0.1, use_ema=True, ema_momentum=0.999)
    weight = keras.Variable(np.zeros(1, np.float32))
    optimizer.build([weight])
    expected = 0.0
    for step in range(20):
        value = float(step + 1)
        weight.assign([value])
        optimizer._update_model_variables_moving_average([weight])
        decay = 0.0 if step == 0 else min(0.999, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value
        optimizer.iterations.assign_add(1)
    average = float(optimizer._model_variables_moving_average[0].numpy()[0])
    assert average == pytest.approx(expected, rel=1e-5)
    assert average > 15  # the late weights dominate (w_20 = 20)


def test_an_outlier_gradient_is_skipped_and_a_normal_one_applied():
    weight = keras.Variable(np.ones(3, "float32"))
    optimizer = builders.build_optimizer("adam", 0.1, skip_threshold=10.0)
    optimizer.build([weight])
    optimizer.apply([tf.constant([1e3, 0.0, 0.0])], [weight])
    np.testing.assert_array_equal(weight.numpy(), np.ones(3))
    assert int(optimizer.iterations) == 0 and int(optimizer.skipped_updates) == 1
    optimizer.apply([tf.constant([np.nan, 0.0, 0.0])], [weight])
    assert int(optimizer.skipped_updates) == 2
    optimizer.apply([tf.constant([1.0, 1.0, 1.0])], [weight])
    assert np.all(weight.numpy() < 1.0) and int(optimizer.iterations) == 1
    config = optimizer.get_config()
    assert config["skip_threshold"] == 10.0
    assert type(optimizer).from_config(config).skip_threshold == 10.0


def test_without_a_threshold_nothing_is_counted():
    """Older checkpoints keep their variables: no skip counter unless asked for."""
    optimizer = builders.build_optimizer("adam", 0.1, use_ema=True)
    assert optimizer.skip_threshold == 0.0 and not hasattr(optimizer, "skipped_updates")


@pytest.mark.slow
def test_every_ema_optimizer_is_registered_and_a_keras_file_reloads(tmp_path):
    for name, plain in builders.OPTIMIZERS.items():
        optimizer = builders.build_optimizer(name, 1e-3, use_ema=True, ema_momentum=0.9)
        restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
        assert type(restored) is type(optimizer) and isinstance(restored, plain), name
        assert restored.use_ema and restored.ema_momentum == pytest.approx(0.9)
    model = tiny_vae((4, 4, 1), hidden_units=(4,))
    model.compile(optimizer=builders.build_optimizer("adam", 1e-3, use_ema=True))
    model.fit(np.zeros((8, 4, 4, 1), np.float32), epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    restored = keras.saving.load_model(tmp_path / "model.keras").optimizer
    assert isinstance(restored, builders.EMAWarmup) and int(restored.iterations) == 1


# -- strategies ---------------------------------------------------------------------------

def test_strategies_by_name():
    assert builders.build_strategy() is tf.distribute.get_strategy()
    mirrored = builders.build_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert mirrored.num_replicas_in_sync >= 1


@pytest.mark.parametrize("name, words", [
    ("parameter_server", "Unknown strategy 'parameter_server'"),
    ("multi_worker", "needs the TF_CONFIG environment variable"),
])
def test_bad_strategies_are_refused_in_one_line(name, words, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert_refused_in_one_line(words, builders.build_strategy, name)


class _Resolver:
    def __init__(self, task_type, task_id, cluster):
        self.task_type, self.task_id, self._cluster = task_type, task_id, cluster

    def cluster_spec(self):
        return tf.train.ClusterSpec(self._cluster)


class _Strategy:
    def __init__(self, *args):
        self.cluster_resolver = _Resolver(*args)


WORKERS = {"worker": ["a:1", "b:1"]}
WITH_CHIEF = {"chief": ["c:1"], **WORKERS}


@pytest.mark.parametrize("task_type, task_id, cluster, chief", [
    ("worker", 0, WORKERS, True),  # no chief task: worker 0 writes
    ("worker", 1, WORKERS, False),
    ("worker", 0, WITH_CHIEF, False),  # the chief task writes
    ("chief", 0, WITH_CHIEF, True),
    (None, None, {}, True),  # one machine
])
def test_one_task_of_a_cluster_is_the_chief(task_type, task_id, cluster, chief):
    assert builders.is_chief(_Strategy(task_type, task_id, cluster)) is chief
    assert builders.is_chief(tf.distribute.get_strategy())
