"""Objectives as objects (`tfvae.losses`): serialization round trips, one-line refusals,
the flat options of older configurations and `.keras` files, and a new objective that
plugs in from this file with no change to the model."""

import inspect
import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import builders, losses, objectives
from tfvae.hierarchy import TopDownBlock
from pattern_data import binary_images
from tiny_models import tiny_vae

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE_SHAPE = (4, 4, 1)


@keras.saving.register_keras_serializable(package="tfvae_tests")
class CapacityELBO(losses.ELBO):
    """A beta-VAE variant (Burgess et al. 2018) that steers the rate to a capacity C:
    loss = E_B[D] + gamma |E_B[R] - C|; it logs `rate_gap` = |R - C| per example."""

    tracked_terms = ("rate_gap",)

    def __init__(self, gamma=10.0, capacity=2.0, **kwargs):
        super().__init__(**kwargs)
        self.gamma, self.capacity = float(gamma), float(capacity)

    def terms(self, model, images, context=None, training=None, seed=None):
        terms = super().terms(model, images, context, training, seed)
        terms["rate_gap"] = tf.abs(terms["rate"] - self.capacity)
        return terms

    def loss(self, model, terms):
        gap = tf.abs(objectives.batch_mean(terms["rate"]) - self.capacity)
        return objectives.batch_mean(terms["distortion"]) + self.gamma * gap


def vae(top_down=(), **kwargs):
    return tiny_vae(IMAGE_SHAPE, seed=0, top_down=top_down, **kwargs)


def hierarchy(loss):
    return vae(top_down=[TopDownBlock(2, (4,))], loss=loss)


def binary(count, seed=0):
    return binary_images(count, IMAGE_SHAPE, seed, on=0.4)


ELBO_KNOBS = dict(beta=0.5, kl_warmup_steps=10, free_bits=0.1, info_alpha=0.2,
                  info_lambda=3.0, mmd_kernel="rbf")
OBJECTIVES = {
    "elbo": losses.ELBO(),
    "elbo_knobs": losses.ELBO(**ELBO_KNOBS),
    "elbo_score_function": losses.ELBO(gradient_estimator="score_function"),
    "iwae": losses.IWAE(),
    "iwae_dreg": losses.IWAE(gradient_estimator="dreg"),
    "wake_sleep": losses.WakeSleep(),
    "capacity": CapacityELBO(gamma=5.0, capacity=1.5, beta=2.0),
}


# -- serialization -------------------------------------------------------------------


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objectives_round_trip_through_config_and_keras_serialization(name):
    objective = OBJECTIVES[name]
    config = objective.get_config()
    again = type(objective).from_config(json.loads(json.dumps(config)))
    assert type(again) is type(objective) and again.get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(objective)))
    restored = keras.saving.deserialize_keras_object(serialized)
    assert type(restored) is type(objective) and restored.get_config() == config
    assert losses.get(serialized).get_config() == config


def test_every_named_objective_is_registered_and_named():
    for name, cls in losses.LOSSES.items():
        objective = losses.get(name)
        assert type(objective) is cls and losses.name_of(objective) == name
        registered = keras.saving.get_registered_name(cls)
        assert keras.saving.get_registered_object(registered) is cls
    assert CapacityELBO().get_config() == {
        **losses.ELBO().get_config(), "gamma": 10.0, "capacity": 2.0}


# -- one-line refusals ----------------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: losses.ELBO(beta=-1.0), "beta, kl_warmup_steps and free_bits must be >= 0"),
    (lambda: losses.ELBO(free_bits=-0.1), "must be >= 0"),
    (lambda: losses.ELBO(gradient_estimator="dreg"),
     "gradient_estimator='dreg' needs objective='iwae'; ELBO takes reparameterization, "
     "score_function"),
    (lambda: losses.ELBO(gradient_estimator="score_function", info_lambda=5.0),
     "no gradient of the InfoVAE MMD term"),
    (lambda: losses.ELBO(mmd_kernel="linear"), "Unknown mmd_kernel 'linear'"),
    (lambda: losses.IWAE(gradient_estimator="score_function"),
     "needs objective='elbo'; IWAE takes reparameterization, dreg"),
    (lambda: losses.IWAE(gradient_estimator="reinforce"),
     "Unknown gradient_estimator 'reinforce'"),
    (lambda: losses.get("vi"), "Unknown loss 'vi'"),
    (lambda: losses.get(3), "loss must be one of elbo, iwae, wake_sleep"),
    (lambda: losses.from_flat_options("iwae", free_bits=0.5),
     "apply to objective='elbo' only"),
    (lambda: losses.from_flat_options("wake_sleep", gradient_estimator="dreg"),
     "needs objective='iwae'; WakeSleep takes no gradient_estimator"),
    (lambda: vae(loss=losses.IWAE(), beta=2.0),
     "Give loss= or the flat options (beta), not both"),
    # Objectives that cannot train the model they are given.
    (lambda: hierarchy(losses.ELBO(gradient_estimator="score_function")),
     "supports one stochastic layer"),
    (lambda: hierarchy(losses.WakeSleep()), "no VampPrior, no top-down hierarchy"),
    (lambda: vae(loss="wake_sleep", prior=tfvae.VampPrior(IMAGE_SHAPE, 2)),
     "no VampPrior"),
], ids=lambda value: None if callable(value) else value[:40])
def test_bad_combinations_are_refused_in_one_line(make, message):
    with pytest.raises(ValueError, match=re.escape(message)) as error:
        make()
    assert "\n" not in str(error.value)


# -- the flat options of older configurations --------------------------------------------

FLAT = {
    "elbo": (dict(), losses.ELBO()),
    "elbo_knobs": (ELBO_KNOBS, losses.ELBO(**ELBO_KNOBS)),
    "score_function": (dict(gradient_estimator="score_function", num_samples=3),
                       losses.ELBO(gradient_estimator="score_function")),
    "iwae_dreg": (dict(objective="iwae", gradient_estimator="dreg", num_samples=3),
                  losses.IWAE(gradient_estimator="dreg")),
    "wake_sleep": (dict(objective="wake_sleep"), losses.WakeSleep()),
}


@pytest.mark.parametrize("name", FLAT)
def test_flat_options_and_objects_give_the_same_model_and_loss(name):
    flat, objective = FLAT[name]
    options = {k: v for k, v in flat.items() if k in losses.FLAT_OPTIONS}
    made = losses.from_flat_options(**options)
    assert type(made) is type(objective) and made.get_config() == objective.get_config()
    num_samples = flat.get("num_samples", 1)
    old, new = vae(**flat), vae(loss=objective, num_samples=num_samples)
    new.set_weights(old.get_weights())
    assert new.get_config()["loss"] == old.get_config()["loss"]
    x = tf.constant(binary(8))

    def loss_and_terms(model):
        keras.utils.set_random_seed(3)  # the dreams and MMD draws are not seeded
        terms = model.training_objective.terms(model, x, training=True,
                                               seed=tf.constant([1, 2]))
        return model.compute_loss(y_pred=terms), terms

    (old_loss, old_terms), (new_loss, new_terms) = map(loss_and_terms, (old, new))
    assert float(old_loss) == float(new_loss)
    assert set(old_terms) == set(new_terms)
    for key in old_terms:
        np.testing.assert_array_equal(old_terms[key], new_terms[key], err_msg=key)


def test_a_config_with_the_flat_options_of_tfvae_0_1_loads():
    model = vae(loss=losses.IWAE(gradient_estimator="dreg"), num_samples=3)
    config = model.get_config()
    old = {key: value for key, value in config.items() if key != "loss"}
    old.update(losses.FLAT_DEFAULTS, objective="iwae", gradient_estimator="dreg")
    again = tfvae.VAE.from_config(old)
    assert again.objective == "iwae" and again.get_config() == config


def test_the_trainers_flags_make_the_loss_in_build_model():
    assert set(losses.FLAT_OPTIONS) <= set(builders.MODEL_DEFAULTS)
    model = builders.build_model(IMAGE_SHAPE, encoder_hidden_units=(8,),
                                 decoder_hidden_units=(8,), latent_dim=2,
                                 objective="iwae", gradient_estimator="dreg",
                                 num_samples=2)
    assert model.training_objective.get_config() == {"gradient_estimator": "dreg"}
    assert type(model.training_objective) is losses.IWAE and model.num_samples == 2


@pytest.mark.parametrize("path, objective, config", [
    ("saved_models/hvae_binarized_mnist/2/hvae_binarized_mnist.keras", losses.IWAE,
     {"gradient_estimator": "dreg"}),
    ("saved_models/cvae_fashion_mnist/1/cvae_fashion_mnist.keras", losses.ELBO,
     {**losses.ELBO().get_config(), "kl_warmup_steps": 5000}),
])
def test_the_shipped_keras_files_load_with_their_objective(path, objective, config):
    model = keras.models.load_model(os.path.join(ROOT, path))
    assert type(model.training_objective) is objective
    assert model.training_objective.get_config() == config
    rng = np.random.default_rng(0)
    x = (rng.random((2, *model.image_shape)) < 0.5).astype("float32")
    inputs = {"images": x, "labels": np.array([0, 1])} if model.num_classes else x
    assert np.all(np.isfinite(model.elbo(inputs, seed=tf.constant([1, 2]))["elbo"]))
    assert set(model(inputs)) >= set(model.metric_names)


# -- a new objective ---------------------------------------------------------------------


def test_a_new_objective_plugs_in_with_no_change_to_the_model(tmp_path, monkeypatch):
    x = binary(64)
    model = vae(loss=CapacityELBO(gamma=5.0, capacity=1.5))
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, epochs=2, batch_size=32, verbose=0).history
    assert set(history) == {"loss", "elbo", "rate", "distortion", "rate_gap"}
    assert all(np.all(np.isfinite(values)) for values in history.values())
    terms = model(x[:8])
    by_hand = (np.mean(terms["distortion"])
               + 5.0 * abs(np.mean(terms["rate"]) - 1.5))
    np.testing.assert_allclose(model.compute_loss(y_pred=terms), by_hand, rtol=1e-5)

    path = str(tmp_path / "capacity.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert type(again.training_objective) is CapacityELBO
    assert json.dumps(again.get_config()) == json.dumps(model.get_config())
    assert again.objective == "CapacityELBO"

    monkeypatch.setitem(losses.LOSSES, "capacity", CapacityELBO)  # the one dict entry
    named = vae(loss="capacity")
    assert type(named.training_objective) is CapacityELBO
    assert named.objective == "capacity"


def test_the_model_never_asks_which_objective_it_trains():
    source = inspect.getsource(tfvae.model)
    assert not re.search(r"(objective|estimator)\s*[!=]=", source)
    assert not re.search(r"[!=]=\s*\"(elbo|iwae|wake_sleep|dreg|score_function)\"",
                         source)
