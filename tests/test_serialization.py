"""One serialization round trip for every class tfvae registers with Keras.

The classes are found, not listed: every module of the package is imported and every
`keras.saving.get_custom_objects()` entry named "tfvae>..." is tested, so a class
registered tomorrow is tested tomorrow, and one without a constructor example in
`EXAMPLES` fails (`test_every_registered_class_has_a_constructor_example`).

For each class (after keras-hub's `run_serialization_test` / `run_model_saving_test`):
build a small instance, give its weights random values (so that no zero-initialized
layer hides a weight that is not copied), run it on fixed inputs; then revive it
with `from_config` and through `serialize_keras_object` and JSON (as a `.keras`
file stores it) and check that the config is the same to the letter, that the
attributes are the same, and that, with the original's weights copied in, every
output is identical: tensors as they are, a distribution by a sample at a fixed
stateless seed and the log-probability of that sample. A `VAE` also goes through
a `.keras` file. Objectives and optimizers own no weights until they run: each copy
runs from the same start and must land at the same place.
"""

import importlib
import json
import pkgutil
from dataclasses import dataclass
from functools import cache
from typing import Callable

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
from pattern_data import binary_images
from tiny_models import tiny_vae
from tfvae import blocks, builders, cells, heads, hierarchy, losses, networks, pixelcnn
from tfvae import priors

tfd = tfp.distributions

PREFIX = "tfvae>"
IMAGE = (8, 8, 1)
SEED = (1, 2)  # the stateless seed of every sample drawn from an output


def registered_classes():
    """{class name: class} of every class the package registers with Keras."""
    for module in pkgutil.walk_packages(tfvae.__path__, "tfvae."):
        importlib.import_module(module.name)
    return {name[len(PREFIX):]: cls for name, cls in
            keras.saving.get_custom_objects().items() if name.startswith(PREFIX)}


REGISTERED = registered_classes()


def normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


IMAGES = binary_images(4, IMAGE)
FEATURES = normal(4, 5)  # a body's features, what a head reads
CONTEXT = np.eye(2, dtype="float32")[[0, 1, 1, 0]]  # one-hot labels of 2 classes
LABELS = np.array([0, 1, 1, 0])


@cache
def encoder():
    """The encoder a VampPrior mixes (the same for the original and its copies)."""
    layer = networks.MLPEncoder(3, (8,))
    layer(IMAGES)
    return layer


@cache
def small_vae():
    """The model the objectives' terms are computed on."""
    return tiny_vae(IMAGE, seed=0, num_samples=2)


# -- how each class runs: (instance) -> outputs --------------------------------------

def on(*inputs, **keywords):
    """Runs a layer on these inputs."""
    return lambda layer: layer(*inputs, **keywords)


def made(step):
    """A MADE step's (shift, log scale) of z [4, 3] and a context [4, 2]. Its
    `build` takes both shapes as one tuple: a call alone cannot build it."""
    if not step.built:
        step.build(((None, 3), (None, 2)))
    return step(normal(4, 3), normal(4, 2, seed=1))


def top_down_block(block):
    """A block's prior and posterior below a code z [4, 3] of the layer above."""
    if not block.built:
        block.build(((None, 3), (None, FEATURES.shape[-1])))
    state = block.state(normal(4, 3, seed=1), None)
    return {"prior": block.prior_distribution(state),
            "posterior": block.posterior_distribution(state, tf.constant(FEATURES))}


def spatial_block(block):
    """A spatial block's prior and posterior below a 2x2x2 code map."""
    if not block.built:
        block.build()
    state = block.state(normal(4, 8, seed=1), None)
    return {"prior": block.prior_distribution(state),
            "posterior": block.posterior_distribution(state, normal(4, 4, 4, 4))}


def objective_terms(objective):
    """The objective's terms on `small_vae` at a fixed seed, and its loss."""
    terms = objective.terms(small_vae(), IMAGES, seed=tf.constant(SEED))
    return {**terms, "loss": objective.loss(small_vae(), terms)}


def optimizer_steps(optimizer):
    """Weights, moving averages and counters after three updates of two fresh
    weights; the second update's gradient is an outlier (norm 100)."""
    weights = [keras.Variable([1.0, -2.0]), keras.Variable([[0.5]])]
    for scale in (1.0, 100.0, 1.0):
        optimizer.apply([tf.constant([0.3, -0.4]) * scale,
                         tf.constant([[0.2]]) * scale], weights)
    return [w.value for w in optimizer.variables + weights]


def model_outputs(model):
    x = {"images": IMAGES, "labels": LABELS}
    seed = tf.constant(SEED)
    return {"log_w": model.log_importance_weights(x, 3, seed=seed),
            "elbo": model.elbo(x, seed=seed), "code": model.code(x),
            "decoded": model.decode(model.code(x), labels=LABELS)}


@dataclass
class Example:
    make: Callable  # () -> a small instance with options away from their defaults
    run: Callable  # (instance) -> outputs: tensors, distributions, dicts, lists


EXAMPLES = {
    # Posterior heads.
    "GaussianPosterior": Example(lambda: heads.GaussianPosterior(3, min_scale=1e-3),
                                 on(FEATURES)),
    "MADE": Example(lambda: heads.MADE(3, hidden_units=6, activation="tanh"), made),
    "IAFPosterior": Example(lambda: heads.IAFPosterior(3, flow_steps=2,
                                                       flow_hidden_units=6,
                                                       context_dim=4, min_scale=1e-3),
                            on(FEATURES)),
    # Encoders and decoders.
    "MLPEncoder": Example(lambda: networks.MLPEncoder(
        3, (8, 6), "tanh", 1e-3, 0.1, context_dim=2,
        head=heads.IAFPosterior(3, 1, flow_hidden_units=4, context_dim=3, name="head")),
        on(IMAGES, context=CONTEXT)),
    "ConvEncoder": Example(lambda: networks.ConvEncoder(3, (4,), (8,), "elu"),
                           on(IMAGES)),
    "MLPDecoder": Example(lambda: networks.MLPDecoder(IMAGE, (8,), "gaussian", "tanh",
                                                      0.05, 0.1),
                          on(normal(4, 3))),
    "ConvDecoder": Example(lambda: networks.ConvDecoder(
        (8, 8, 3), (4, 2), (8,), likelihood="discretized_logistic",
        likelihood_components=2), on(normal(4, 3))),
    # Priors.
    "StandardNormalPrior": Example(lambda: priors.StandardNormalPrior(3), on()),
    "MixturePrior": Example(lambda: priors.MixturePrior(3, num_components=2), on()),
    "VampPrior": Example(lambda: priors.VampPrior(IMAGE, num_pseudo_inputs=2),
                         lambda prior: prior(encoder=encoder())),
    "ConditionalPrior": Example(lambda: priors.ConditionalPrior(3, 2, min_scale=1e-3),
                                on(context=CONTEXT)),
    # Hierarchies.
    "TopDownBlock": Example(lambda: hierarchy.TopDownBlock(
        3, (6,), "tanh", 1e-3, posterior_head=heads.IAFPosterior(
            3, 2, flow_hidden_units=4, context_dim=2, name="posterior_head")),
        top_down_block),
    "ResidualCell": Example(lambda: cells.ResidualCell(4, 2, 3, "elu", num_cells=4),
                            on(normal(2, 4, 4, 4))),
    "ResNetEncoder": Example(lambda: blocks.ResNetEncoder(
        IMAGE, [(2, 2, 1), (4, 4, 1)], channels=4, latent_channels=2, num_cells=3),
        on(IMAGES)),
    "SpatialBlock": Example(lambda: blocks.SpatialBlock(
        (4, 4, 1), (2, 2), channels=4, latent_channels=2, bottleneck=3), spatial_block),
    "ResNetDecoder": Example(lambda: blocks.ResNetDecoder(
        IMAGE, (4, 4), cells=2, channels=4, latent_channels=2, autoregressive_layers=1,
        autoregressive_channels=3), on(normal(4, 4, 4, 6))),
    "MaskedConv2D": Example(lambda: pixelcnn.MaskedConv2D(3, 3, "A"), on(IMAGES)),
    "PixelCNN": Example(lambda: pixelcnn.PixelCNN(2, channels=3, kernel_size=5),
                        on(IMAGES, normal(4, 8, 8, 2))),
    # Objectives.
    "ELBO": Example(lambda: losses.ELBO(0.5, 10, 0.1, 0.2, 2.0, "rbf"), objective_terms),
    "IWAE": Example(lambda: losses.IWAE("dreg"), objective_terms),
    "WakeSleep": Example(losses.WakeSleep, objective_terms),
    # The model: a conditional two-layer hierarchy with IAF posteriors, a mixture
    # prior and the DReG IWAE objective.
    "VAE": Example(lambda: builders.build_model(
        IMAGE, latent_dim=2, top_down_latent_dims=(3,), encoder_hidden_units=(8,),
        decoder_hidden_units=(8,), top_down_hidden_units=(4,), posterior="iaf",
        flow_hidden_units=4, prior="mixture", prior_components=2, num_classes=2,
        objective="iwae", gradient_estimator="dreg", num_samples=2), model_outputs),
    # The optimizers whose weight average warms up and which skip outliers.
    **{cls.__name__: Example(
        lambda cls=cls: cls(learning_rate=0.1, use_ema=True, ema_momentum=0.9,
                            skip_threshold=50.0), optimizer_steps)
       for cls in builders.WARMUP_OPTIMIZERS.values()},
}


# -- the checks ------------------------------------------------------------------------

def arrays(output):
    """The arrays that pin an output down, flattened to {path: numpy array}: a
    distribution by a sample at `SEED` and that sample's log-probability."""
    if isinstance(output, tfd.Distribution):
        sample = output.sample(seed=tf.constant(SEED))
        return {"sample": sample.numpy(), "log_prob": output.log_prob(sample).numpy()}
    if isinstance(output, dict):
        items = output.items()
    elif isinstance(output, (list, tuple)):
        items = enumerate(output)
    else:
        return {"": np.asarray(output)}
    return {f"{key}/{path}": value for key, item in items
            for path, value in arrays(item).items()}


def run(example, instance):
    """The example's outputs, every random op seeded alike."""
    keras.utils.set_random_seed(0)
    return arrays(example.run(instance))


def assert_same_outputs(got, want):
    assert got.keys() == want.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def as_json(config):
    return json.dumps(config, sort_keys=True)


def randomize_weights(layer):
    """Random values in every float weight (zero-initialized output layers, such as
    MADE's and the PixelCNN's, would otherwise compare equal whatever is copied)."""
    rng = np.random.default_rng(7)
    for weight in layer.weights:
        weight.assign((0.3 * rng.standard_normal(weight.shape)).astype(weight.dtype))


def revived(instance):
    """Copies of `instance` from its config and from its JSON serialization."""
    config = instance.get_config()
    blob = json.loads(json.dumps(keras.saving.serialize_keras_object(instance)))
    assert blob["registered_name"] == PREFIX + type(instance).__name__
    return [type(instance).from_config(config), keras.saving.deserialize_keras_object(blob)]


def check_copy(example, instance, copy, outputs):
    assert type(copy) is type(instance)
    assert as_json(copy.get_config()) == as_json(instance.get_config())
    if isinstance(instance, keras.layers.Layer):
        run(example, copy)  # builds its weights
        assert set(dir(copy)) == set(dir(instance))
        assert [w.shape for w in copy.weights] == [w.shape for w in instance.weights]
        copy.set_weights(instance.get_weights())
    assert_same_outputs(run(example, copy), outputs)


def test_every_registered_class_has_a_constructor_example():
    assert len(REGISTERED) >= 27  # 27 when this test was written
    missing = sorted(set(REGISTERED) - set(EXAMPLES))
    assert not missing, f"add a constructor example to EXAMPLES for {missing}"
    unregistered = sorted(set(EXAMPLES) - set(REGISTERED))
    assert not unregistered, f"these examples' classes are not registered: {unregistered}"


@pytest.mark.parametrize("name", sorted(REGISTERED))
def test_round_trip(name, tmp_path):
    example = EXAMPLES.get(name)
    if example is None:
        pytest.fail(f"tfvae>{name} is registered but has no constructor example in "
                    f"EXAMPLES (tests/test_serialization.py): add one.")
    instance = example.make()
    assert type(instance) is REGISTERED[name]
    if isinstance(instance, keras.layers.Layer):
        run(example, instance)  # builds its weights
        randomize_weights(instance)
    outputs = run(example, instance)
    assert all(np.all(np.isfinite(value)) for value in outputs.values())
    for copy in revived(instance):
        check_copy(example, instance, copy, outputs)
    if isinstance(instance, keras.Model):
        path = str(tmp_path / "model.keras")
        instance.save(path)
        loaded = keras.saving.load_model(path)
        assert type(loaded) is type(instance)
        assert as_json(loaded.get_config()) == as_json(instance.get_config())
        assert_same_outputs(run(example, loaded), outputs)
