"""Deep latent models: a linear-Gaussian hierarchy with an exact log p(x), and a
hierarchical model through fit, `.keras` files, the SavedModel and TFLite (the IAF
posterior's own tests are in test_heads.py).

Linear-Gaussian two-layer hierarchy, built from tfvae layers with hand-set weights:
    z2 ~ N(0, 1),  z1 | z2 ~ N(A z2 + a, s1^2 I),  x | z1 ~ N(W z1 + b, s^2 I)
    =>  x ~ N(W a + b, C + W A A^T W^T),  C = s1^2 W W^T + s^2 I.
Exact posteriors (diagonal because W has orthogonal columns and z2 is scalar):
    p(z2 | x):     precision P2 = 1 + A^T W^T C^-1 W A,  mean P2^-1 A^T W^T C^-1 (x - W a - b)
    p(z1 | z2, x): precision P1 = I / s1^2 + W^T W / s^2,
                   mean P1^-1 ((A z2 + a) / s1^2 + W^T (x - b) / s^2).
With them every importance weight equals p(x), so log w = log p(x) exactly.
"""

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import keras
import tfvae
from tfvae import builders, export
from tfvae.hierarchy import TopDownBlock
from export_parity import check_export_parity
from pattern_data import binary_images as binary
from tiny_models import inverse_softplus

tfd = tfp.distributions

D_X, D_1, S, S1 = 4, 2, 0.4, 0.6
_rng = np.random.default_rng(0)
W = np.linalg.qr(_rng.normal(size=(D_X, D_1)))[0] * np.array([1.5, 0.8])
B = _rng.normal(size=D_X)
A = np.array([[1.2], [-0.7]])  # [D_1, 1]
A0 = np.array([0.3, -0.2])
X = B + _rng.normal(size=(3, D_X)) * 1.5
MIN_SCALE = 1e-4


def log_evidence(x):
    cov = S1 ** 2 * W @ W.T + S ** 2 * np.eye(D_X) + W @ A @ A.T @ W.T
    return tfd.MultivariateNormalFullCovariance(W @ A0 + B, cov).log_prob(x).numpy()


def posterior_of_top():
    c = S1 ** 2 * W @ W.T + S ** 2 * np.eye(D_X)
    wa = W @ A  # [D_X, 1]
    precision = 1.0 + wa.T @ np.linalg.solve(c, wa)  # [1, 1]
    gain = np.linalg.solve(precision, np.linalg.solve(c, wa).T)  # [1, D_X]
    return gain, -gain @ (W @ A0 + B), np.sqrt(1.0 / precision[0, 0])


def linear_hierarchy(top_shift=0.0, **kwargs):
    """The model above with its exact posteriors (the top mean shifted by top_shift)."""
    encoder = tfvae.MLPEncoder(1, hidden_units=(), min_scale=MIN_SCALE)
    hidden = 1 + D_X  # h1 carries z2; the merge carries [z2, x]
    block = TopDownBlock(D_1, hidden_units=(hidden,), activation="linear",
                         min_scale=MIN_SCALE)
    decoder = tfvae.MLPDecoder((D_X, 1, 1), hidden_units=(), likelihood="gaussian",
                               min_scale=1e-3)
    model = tfvae.VAE(encoder, decoder, top_down=[block], **kwargs)
    gain, offset, top_scale = posterior_of_top()
    encoder.head.set_weights([
        np.concatenate([gain.T, np.zeros((D_X, 1))], 1).astype("float32"),
        np.array([offset[0] + top_shift,
                  inverse_softplus(top_scale - MIN_SCALE)], "float32")])
    state = np.zeros((1, hidden))
    state[0, 0] = 1.0  # h1 = [z2, 0, ...]
    block.state_net[0].set_weights([state.astype("float32"), np.zeros(hidden, "float32")])
    prior_kernel = np.zeros((hidden, 2 * D_1))
    prior_kernel[0, :D_1] = A[:, 0]
    block.prior_head.set_weights([prior_kernel.astype("float32"), np.concatenate(
        [A0, np.full(D_1, inverse_softplus(S1 - MIN_SCALE))]).astype("float32")])
    merge = np.zeros((hidden + D_X, hidden))  # [h1, x] -> [z2, x]
    merge[0, 0] = 1.0
    merge[hidden:, 1:] = np.eye(D_X)
    block.merge_net[0].set_weights([merge.astype("float32"), np.zeros(hidden, "float32")])
    p1 = 1.0 / S1 ** 2 + np.diag(W.T @ W) / S ** 2  # diagonal precision
    kernel = np.zeros((hidden, 2 * D_1))
    kernel[0, :D_1] = A[:, 0] / S1 ** 2 / p1
    kernel[1:, :D_1] = W / S ** 2 / p1
    bias = np.concatenate([(A0 / S1 ** 2 - W.T @ B / S ** 2) / p1,
                           inverse_softplus(np.sqrt(1.0 / p1) - MIN_SCALE)])
    block.posterior_head.set_weights([kernel.astype("float32"), bias.astype("float32")])
    out = np.zeros((D_1 + hidden, 2 * D_X))  # decoder input [z1, h1]
    out[:D_1, 0::2] = W.T
    out_bias = np.full(2 * D_X, inverse_softplus(S - 1e-3))
    out_bias[0::2] = B
    decoder.out.set_weights([out.astype("float32"), out_bias.astype("float32")])
    return model


def images(x):
    return tf.constant(x.reshape(-1, D_X, 1, 1), tf.float32)


def test_exact_posteriors_make_every_log_weight_the_exact_log_evidence():
    model = linear_hierarchy()
    log_w = model.log_importance_weights(images(X), 200).numpy()
    np.testing.assert_allclose(log_w, np.broadcast_to(log_evidence(X), log_w.shape),
                               atol=2e-3)


def test_other_posteriors_stay_below_and_iwae_rises_toward_log_evidence():
    model = linear_hierarchy(top_shift=0.8)
    exact = log_evidence(X)
    log_w = model.log_importance_weights(images(X), 20 * 4000).numpy()
    log_w = log_w.reshape(20, 4000, -1)  # 4000 i.i.d. bounds of each k
    bounds = []
    for k in (1, 5, 20):
        per_draw = tf.reduce_logsumexp(log_w[:k], axis=0).numpy() - np.log(k)
        bounds.append(per_draw.mean(0))
        assert np.all(per_draw.mean(0) + 4 * per_draw.std(0) / np.sqrt(4000) < exact)
    assert np.all(np.diff(np.stack(bounds), axis=0) > 0)
    elbo = model.elbo(images(X), num_samples=4000)
    assert np.all(elbo["elbo"].numpy() < exact - 0.05)


def test_layer_rates_add_up_to_the_rate_and_the_elbo_matches_the_log_weights():
    model = linear_hierarchy(top_shift=0.8)
    terms = model.elbo(images(X), num_samples=20000, seed=[3, 4])  # seeded: the
    # tolerance is ~2.5 standard errors of the two Monte Carlo means, which missed once
    np.testing.assert_allclose(terms["rate"], terms["rate/1"] + terms["rate/2"],
                               rtol=1e-5)
    # Analytic layer KLs + sampled distortion agree with the mean log-weight.
    mean_log_w = model.log_importance_weights(images(X), 20000, seed=[5, 6]).numpy().mean(0)
    np.testing.assert_allclose(terms["elbo"], mean_log_w, atol=0.05)


# -- a hierarchical model end to end -------------------------------------------------

IMAGE_SHAPE = (8, 8, 1)


def deep_model(**options):
    keras.utils.set_random_seed(3)
    options = {"latent_dim": 3, "top_down_latent_dims": (4,), "encoder_hidden_units": (16, 16),
               "decoder_hidden_units": (16,), "top_down_hidden_units": (8,), **options}
    return builders.build_model(IMAGE_SHAPE, **options)


@pytest.mark.parametrize("options", [
    {"prior": "vampprior", "prior_components": 5},
    {"posterior": "iaf", "flow_hidden_units": 8},
    {"objective": "iwae", "num_samples": 3, "gradient_estimator": "dreg"},
])
@pytest.mark.slow
def test_fit_reports_layer_rates_and_keras_files_round_trip(options, tmp_path):
    model = deep_model(**options)
    model.compile(optimizer="adam", jit_compile=True)
    history = model.fit(binary(32), batch_size=8, epochs=1, verbose=0).history
    assert {"rate/1", "rate/2"} <= set(history)
    np.testing.assert_allclose(history["rate"][-1],
                               history["rate/1"][-1] + history["rate/2"][-1], rtol=1e-4)
    model.save(tmp_path / "m.keras")
    clone = keras.saving.load_model(tmp_path / "m.keras")
    x = binary(4, seed=1)
    np.testing.assert_allclose(clone.code(x), model.code(x), atol=1e-5)
    np.testing.assert_allclose(clone.reconstruct(x), model.reconstruct(x), atol=1e-5)


def test_dreg_through_a_hierarchy_equals_the_iwae_gradient_in_expectation():
    """DReG's encoder gradient is unbiased for the IWAE one (many seeds, 5 SE)."""
    iwae = deep_model(objective="iwae", num_samples=4)
    dreg = deep_model(objective="iwae", num_samples=4, gradient_estimator="dreg")
    dreg.set_weights(iwae.get_weights())
    x = tf.constant(binary(2, seed=5))

    def gradient_fn(model):
        @tf.function
        def encoder_gradients(seed):
            with tf.GradientTape() as tape:
                terms = model.training_objective.terms(model, x, training=False,
                                                       seed=seed)
                loss = model.compute_loss(y_pred=terms)
            grads = tape.gradient(loss, model.encoder.trainable_variables)
            return tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        return lambda seed: encoder_gradients(tf.constant([seed, 0])).numpy()

    iwae_fn, dreg_fn = gradient_fn(iwae), gradient_fn(dreg)
    a = np.stack([iwae_fn(s) for s in range(300)])
    b = np.stack([dreg_fn(s) for s in range(300)])
    se = np.sqrt(a.var(0) / len(a) + b.var(0) / len(b)) + 1e-7
    assert np.mean(np.abs(a.mean(0) - b.mean(0)) < 5 * se) > 0.97
    assert np.abs(a.mean(0)).max() > 10 * se.max() / 5  # the gradient is not ~0


@pytest.mark.slow
def test_saved_model_and_tflite_of_a_hierarchy(tmp_path):
    model = deep_model()
    paths = export.export_model(model, str(tmp_path), name="deep")
    encoded = check_export_parity(model, paths, binary(5))
    assert {"code", "loc_1", "scale_1", "loc_2", "scale_2"} <= set(encoded)
    assert model.latent_dim == 7


@pytest.mark.slow
def test_the_tools_work_unchanged_on_a_deep_model(tmp_path):
    import json
    import os
    import subprocess
    import sys

    model = deep_model(posterior="iaf", flow_hidden_units=8)
    model.save(tmp_path / "deep.keras")
    np.save(tmp_path / "images.npy", binary(20))
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    report = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "tools.evaluate", str(tmp_path / "deep.keras"),
         f"--images_npy={tmp_path / 'images.npy'}", "--num_samples=20",
         f"--output={report}"], cwd=repo, capture_output=True, text=True, timeout=300,
        env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(report.read_text())
    assert figures["nll"] > 0 and len(figures["activity"]) == 7
    np.testing.assert_allclose(figures["rate"], figures["rate/1"] + figures["rate/2"],
                               rtol=1e-4)
