"""Wake-sleep (objective="wake_sleep"): the sleep phase recovers a known posterior, each
phase's gradient reaches its own networks only, and fit, XLA and `.keras` files work.

Linear-Gaussian model: p(z) = N(0, I), p(x|z) = N(W z + b, s^2 I), so that
    p(z|x) = N(A x + c, Sigma),  Sigma = (I + W^T W / s^2)^-1,  A = Sigma W^T / s^2,
    c = -A b.
The sleep phase maximizes E_{p(z, x)}[log q(z|x)] over a linear diagonal-Gaussian q,
i.e. it minimizes E_x KL(p(z|x) || q(z|x)): its optimum has mean A x + c and the
posterior's marginal variances diag(Sigma). When W's columns are orthogonal Sigma is
diagonal and q is the exact posterior; when they are not, the ELBO's reverse KL would
instead give the variances 1 / diag(Sigma^-1), smaller, which the test tells apart.
Dreaming the likelihood's mean instead of a sample would regress z on noise-free
x = W z + b: mean map (W^T W)^-1 W^T and variances near 0, which the test also tells
apart (as it does a wake phase whose z carries the encoder's gradient).
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import builders, objectives
from test_model import (B, DECODER_MIN_SCALE, ENCODER_MIN_SCALE, S, W, exact_posterior,
                        images, inverse_softplus, prototype_images, small_vae)

CONFIGS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "configs")
D_X, D_Z = W.shape
# Nearly parallel columns: a posterior correlation of -0.78.
W_CORRELATED = np.array([[0.8, 0.6], [0.5, 0.6], [-0.4, -0.3], [0.3, 0.4], [0.1, 0.0]])


def posterior_maps(w):
    """(A, c, Sigma) of p(z|x) = N(A x + c, Sigma) for decoder weights w [D_X, D_Z]."""
    sigma = np.linalg.inv(np.eye(D_Z) + w.T @ w / S ** 2)
    a = sigma @ w.T / S ** 2
    return a, -a @ B, sigma


def frozen_decoder_vae(w):
    """Wake-sleep VAE with p(x|z) = N(w z + b, s^2 I) fixed and a fresh linear encoder."""
    encoder = tfvae.MLPEncoder(D_Z, hidden_units=(), min_scale=ENCODER_MIN_SCALE)
    decoder = tfvae.MLPDecoder((D_X, 1, 1), hidden_units=(), likelihood="gaussian",
                               min_scale=DECODER_MIN_SCALE)
    model = tfvae.VAE(encoder, decoder, objective="wake_sleep")
    kernel = np.zeros((D_Z, 2 * D_X))  # [loc | raw scale] interleaved per pixel
    kernel[:, 0::2] = w.T
    bias = np.full(2 * D_X, inverse_softplus(S - DECODER_MIN_SCALE))
    bias[0::2] = B
    decoder.out.set_weights([kernel.astype("float32"), bias.astype("float32")])
    decoder.trainable = False
    return model


def test_posterior_maps_agree_with_the_diagonal_case():
    a, c, sigma = posterior_maps(W)
    x = B + np.random.default_rng(0).normal(size=(3, D_X))
    mean, stddev = exact_posterior(x)
    np.testing.assert_allclose(x @ a.T + c, mean, atol=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diag(sigma)), stddev, rtol=1e-12)


@pytest.mark.parametrize("w", [W, W_CORRELATED], ids=["orthogonal", "correlated"])
@pytest.mark.slow
def test_sleep_phase_recovers_the_posterior_of_a_linear_gaussian_model(w):
    keras.utils.set_random_seed(0)
    model = frozen_decoder_vae(w)
    frozen = [v.numpy() for v in model.decoder.weights]
    steps, batch = 5000, 1000  # about 10 s after compilation
    schedule = keras.optimizers.schedules.CosineDecay(0.1, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), jit_compile=True,
                  steps_per_execution=500)
    # The images only feed the wake phase, which has no trainable weight here.
    x = images(B + np.random.default_rng(1).normal(size=(batch, D_X)))
    data = tf.data.Dataset.from_tensors(x).repeat(steps)
    model.fit(data, epochs=1, verbose=0)
    for before, after in zip(frozen, model.decoder.weights):
        np.testing.assert_array_equal(before, after.numpy())

    a, c, sigma = posterior_maps(w)
    rng = np.random.default_rng(2)  # x ~ p(x), where the sleep phase fits q
    x_test = rng.normal(size=(200, D_Z)) @ w.T + B + S * rng.normal(size=(200, D_X))
    q = model.encode(images(x_test))
    stddev = np.sqrt(np.diag(sigma))
    np.testing.assert_allclose(q.mean(), x_test @ a.T + c, atol=0.03)
    np.testing.assert_allclose(q.stddev(), np.broadcast_to(stddev, (200, D_Z)), rtol=0.03)

    # The tolerances tell the right answer from the wrong ones named above.
    wrong_mean_map = np.linalg.pinv(w)
    assert np.abs((x_test - B) @ (wrong_mean_map - a).T).max() > 0.3
    if w is W_CORRELATED:
        reverse_kl_stddev = 1.0 / np.sqrt(np.diag(np.linalg.inv(sigma)))
        assert np.all(stddev / reverse_kl_stddev > 1.5), (stddev, reverse_kl_stddev)


def test_wake_gradient_reaches_the_generative_model_and_sleep_the_encoder_only():
    keras.utils.set_random_seed(1)
    model = small_vae(objective="wake_sleep", prior=tfvae.MixturePrior(2, 3))
    x = prototype_images(16)
    generative = model.decoder.trainable_variables + model.prior.trainable_variables
    recognition = model.encoder.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        terms = model(x, training=True)
        wake = objectives.batch_mean(terms["_wake"])
        sleep = objectives.batch_mean(terms["sleep"])
        loss = model.compute_loss(x, None, terms)
    np.testing.assert_allclose(loss, wake + sleep, rtol=1e-6)
    for term, own, other in ((wake, generative, recognition),
                             (sleep, recognition, generative)):
        assert all(g is None for g in tape.gradient(term, other))
        grads = tape.gradient(term, own)
        assert all(g is not None and np.any(g.numpy() != 0) for g in grads)
    # The loss has both phases' gradients at once.
    for var, g, g_wake, g_sleep in zip(
            generative + recognition, tape.gradient(loss, generative + recognition),
            tape.gradient(wake, generative) + [None] * len(recognition),
            [None] * len(generative) + tape.gradient(sleep, recognition)):
        np.testing.assert_allclose(g, g_wake if g_sleep is None else g_sleep,
                                   err_msg=var.path)


def test_dreams_are_samples_of_the_model():
    keras.utils.set_random_seed(2)
    model = small_vae(objective="wake_sleep")
    z, x = model.dream(5)
    assert z.shape == (5, 2) and x.shape == (5, 8, 8, 1)
    assert set(np.unique(x.numpy())) <= {0.0, 1.0}  # Bernoulli samples, not means


@pytest.mark.slow
def test_short_xla_fit_raises_the_elbo_and_logs_finite_metrics(tmp_path):
    keras.utils.set_random_seed(3)
    x = prototype_images()
    model = small_vae(objective="wake_sleep", num_samples=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    before = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)
    history = model.fit(x, epochs=12, batch_size=32, verbose=0).history
    after = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)
    assert set(history) == {"loss", "elbo", "rate", "distortion", "sleep"}
    assert all(np.all(np.isfinite(v)) for v in history.values())
    np.testing.assert_allclose(history["elbo"], -(np.array(history["rate"])
                                                  + np.array(history["distortion"])),
                               rtol=1e-4)
    assert after["elbo"] > before["elbo"] + 10, (before, after)
    assert history["sleep"][-1] < history["sleep"][0]
    # The logged ELBO is the model's ELBO, estimated as for AEVB.
    elbo = np.mean([np.mean(model.elbo(x)["elbo"]) for _ in range(20)])
    assert abs(after["elbo"] - elbo) < 1.0

    path = str(tmp_path / "ws.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert again.objective == "wake_sleep"
    assert json.dumps(again.get_config()) == json.dumps(model.get_config())
    np.testing.assert_array_equal(again.encode(x[:4]).mean(), model.encode(x[:4]).mean())
    again.compile(optimizer="adam")
    assert set(again.evaluate(x, verbose=0, return_dict=True)) == set(history)


def test_loss_of_an_empty_batch_is_zero_not_nan():
    model = small_vae(objective="wake_sleep")
    empty = np.zeros((0, 8, 8, 1), "float32")
    assert float(model.compute_loss(y_pred=model(empty, training=True))) == 0.0


@pytest.mark.parametrize("options, message", [
    (dict(objective="wake_sleep", free_bits=0.5), "apply to objective='elbo' only"),
    (dict(objective="wake_sleep", beta=2.0), "apply to objective='elbo' only"),
    (dict(objective="wake_sleep", info_lambda=3.0), "apply to objective='elbo' only"),
    (dict(objective="wake_sleep", gradient_estimator="dreg"), "needs objective='iwae'"),
    (dict(objective="wake_sleep", gradient_estimator="score_function"),
     "needs objective='elbo'"),
    (dict(objective="wake_sleep", prior="vampprior"), "no VampPrior"),
    (dict(objective="wake_sleep", top_down_latent_dims=(2,)), "no top-down hierarchy"),
])
def test_combinations_without_a_meaning_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        builders.build_model((8, 8, 1), encoder_hidden_units=(8,),
                             decoder_hidden_units=(8,), latent_dim=4,
                             top_down_hidden_units=(8,), prior_components=2, **options)


def test_the_wake_sleep_config_differs_from_aevb_in_the_objective_only():
    from tfvae import train

    def options(name):
        trainer = train.trainer_flags()
        trainer(["tfvae.train", f"--flagfile={CONFIGS}/{name}"])
        return train.options_from_flags(trainer)

    aevb, wake_sleep = options("aevb_mnist.cfg"), options("aevb_mnist_wake_sleep.cfg")
    differ = {k for k in aevb if aevb[k] != wake_sleep[k]}
    assert differ == {"objective", "output_dir"}
    assert wake_sleep["objective"] == "wake_sleep"
