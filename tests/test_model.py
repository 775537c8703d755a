"""The VAE model: exact answers on a linear-Gaussian model, fit/evaluate metrics by hand,
serialization round trips, clear errors, XLA and a distribution strategy.

Linear-Gaussian model (probabilistic PCA, Tipping & Bishop 1999), built from tfvae
layers with hand-set weights:
    p(z) = N(0, I),  p(x|z) = N(W z + b, s^2 I)  =>  log p(x) = log N(x; b, W W^T + s^2 I).
With orthogonal columns of W, M = W^T W + s^2 I is diagonal and the exact posterior is
    q*(z|x) = N(M^-1 W^T (x - b), s^2 M^-1)   (diagonal, so an MLPEncoder can express it).
For any diagonal Gaussian q = N(m, diag(v)):
    rate       = 1/2 sum_j (v_j + m_j^2 - 1 - log v_j)
    distortion = d/2 log(2 pi s^2) + (|x - W m - b|^2 + sum_j |W_j|^2 v_j) / (2 s^2)
and log p(x) - ELBO = KL(q || q*) >= 0, with equality only at q = q*.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import objectives, warmstart
from tiny_models import inverse_softplus, tiny_vae

# -- the linear-Gaussian model --------------------------------------------------------

D_X, D_Z, S = 5, 2, 0.5
_rng = np.random.default_rng(0)
W = np.linalg.qr(_rng.normal(size=(D_X, D_Z)))[0] * np.array([2.0, 0.7])
B = _rng.normal(size=D_X)
M = np.diag(W.T @ W) + S ** 2  # diagonal of W^T W + s^2 I
X = (B + _rng.normal(size=(3, D_X)) * 1.5)  # three data points, [3, D_X]
ENCODER_MIN_SCALE, DECODER_MIN_SCALE = 1e-4, 1e-3


def exact_posterior(x):
    return (x - B) @ W / M, np.sqrt(S ** 2 / M)  # mean [N, D_Z], stddev [D_Z]


def log_evidence(x):
    cov = W @ W.T + S ** 2 * np.eye(D_X)
    diff = x - B
    _, logdet = np.linalg.slogdet(cov)
    return -0.5 * (D_X * np.log(2 * np.pi) + logdet
                   + np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff))


def closed_form_terms(mean, stddev, x):
    var = stddev ** 2
    rate = 0.5 * np.sum(var + mean ** 2 - 1 - np.log(var), axis=-1)
    residual = np.sum((x - mean @ W.T - B) ** 2, axis=-1)
    distortion = (0.5 * D_X * np.log(2 * np.pi * S ** 2)
                  + (residual + np.sum(np.sum(W ** 2, 0) * var)) / (2 * S ** 2))
    return rate, distortion


def linear_gaussian_vae(mean_scale=1.0, mean_shift=0.0, stddev_scale=1.0, **kwargs):
    """VAE whose q(z|x) is the exact posterior, optionally distorted (mean and scale)."""
    encoder = tfvae.MLPEncoder(D_Z, hidden_units=(), min_scale=ENCODER_MIN_SCALE)
    decoder = tfvae.MLPDecoder((D_X, 1, 1), hidden_units=(), likelihood="gaussian",
                               min_scale=DECODER_MIN_SCALE)
    model = tfvae.VAE(encoder, decoder, **kwargs)
    # Encoder head: [loc | raw scale] = x @ kernel + bias; loc = (x - b) W M^-1.
    kernel = np.zeros((D_X, 2 * D_Z))
    kernel[:, :D_Z] = mean_scale * W / M
    bias = np.zeros(2 * D_Z)
    bias[:D_Z] = mean_scale * (-B @ W / M) + mean_shift
    bias[D_Z:] = inverse_softplus(stddev_scale * np.sqrt(S ** 2 / M) - ENCODER_MIN_SCALE)
    encoder.head.set_weights([kernel.astype("float32"), bias.astype("float32")])
    # Decoder output [D_X, 1, 2]: index 2 i is the loc of pixel i, 2 i + 1 its raw scale.
    kernel = np.zeros((D_Z, 2 * D_X))
    kernel[:, 0::2] = W.T
    bias = np.full(2 * D_X, inverse_softplus(S - DECODER_MIN_SCALE))
    bias[0::2] = B
    decoder.out.set_weights([kernel.astype("float32"), bias.astype("float32")])
    return model


def images(x):
    return x.reshape(-1, D_X, 1, 1).astype("float32")


def test_linear_gaussian_layers_hold_the_intended_model():
    model = linear_gaussian_vae()
    z = np.random.default_rng(1).normal(size=(4, D_Z)).astype("float32")
    likelihood = model.decode(z)
    np.testing.assert_allclose(likelihood.mean().numpy().reshape(4, D_X), z @ W.T + B,
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(likelihood.stddev(), S, rtol=1e-5)
    q = model.encode(images(X))
    mean, stddev = exact_posterior(X)
    np.testing.assert_allclose(q.mean(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(q.stddev(), np.broadcast_to(stddev, (3, D_Z)), rtol=1e-5)


@pytest.mark.parametrize("num_samples", [1, 3])
def test_elbo_of_the_exact_posterior_is_log_evidence_for_every_sample(num_samples):
    # log p(x|z) + log p(z) - log q*(z|x) = log p(x) for every z: no Monte Carlo error.
    model = linear_gaussian_vae(kl="sampled", num_samples=num_samples)
    for _ in range(3):
        np.testing.assert_allclose(model.elbo(images(X))["elbo"], log_evidence(X),
                                   rtol=1e-5, atol=1e-4)
    log_w = model.log_importance_weights(images(X), 7).numpy()
    np.testing.assert_allclose(log_w, np.broadcast_to(log_evidence(X), (7, 3)),
                               rtol=1e-5, atol=1e-4)
    iwae = tfvae.VAE.from_config({**model.get_config(), "loss": "iwae",
                                  "num_samples": 5, "kl": "auto"})
    iwae.set_weights(model.get_weights())
    np.testing.assert_allclose(iwae(images(X))["iwae"], log_evidence(X), rtol=1e-5,
                               atol=1e-4)


def _check_terms_against_closed_form(model, mean, stddev, num=20000):
    x = images(X)
    terms = model.elbo(x, num_samples=num)
    rate, distortion = closed_form_terms(mean, stddev, X)
    np.testing.assert_allclose(terms["rate"], rate, rtol=1e-4, atol=1e-5)  # analytic
    # The distortion is a Monte Carlo mean: tolerance from its sample variance.
    log_lik = model.log_likelihood(x, model.encode(x).sample(num)).numpy()
    se = log_lik.std(0, ddof=1) / np.sqrt(num)
    np.testing.assert_array_less(np.abs(terms["distortion"].numpy() - distortion), 5 * se)
    np.testing.assert_allclose(terms["elbo"], -(terms["rate"] + terms["distortion"]),
                               rtol=1e-6)
    return terms, -(rate + distortion), se


def test_exact_posterior_rate_and_distortion_match_closed_form():
    mean, stddev = exact_posterior(X)
    terms, elbo, se = _check_terms_against_closed_form(linear_gaussian_vae(), mean, stddev)
    np.testing.assert_allclose(elbo, log_evidence(X), rtol=1e-9)  # the maths is right
    np.testing.assert_array_less(np.abs(terms["elbo"].numpy() - log_evidence(X)), 5 * se)


def test_any_other_gaussian_posterior_is_strictly_below_log_evidence():
    mean, stddev = exact_posterior(X)
    for options in (dict(mean_shift=0.4), dict(stddev_scale=1.6),
                    dict(mean_scale=0.8, stddev_scale=0.7)):
        other_mean = (options.get("mean_scale", 1.0) * mean + options.get("mean_shift", 0.0))
        other_stddev = options.get("stddev_scale", 1.0) * stddev
        model = linear_gaussian_vae(**options)
        terms, elbo, se = _check_terms_against_closed_form(model, other_mean, other_stddev)
        gap = log_evidence(X) - elbo  # KL(q || q*) in closed form
        assert np.all(gap > 0.05), gap
        np.testing.assert_array_less(terms["elbo"].numpy() + 5 * se, log_evidence(X))


def test_iwae_bound_increases_with_k_from_the_elbo_to_below_log_evidence():
    model = linear_gaussian_vae(mean_shift=0.5, stddev_scale=1.8)
    mean, stddev = exact_posterior(X)
    rate, distortion = closed_form_terms(0.5 + mean, 1.8 * stddev, X)
    elbo, evidence = -(rate + distortion), log_evidence(X)
    repeats, means, ses = 2000, {}, {}
    for k in (1, 2, 4, 16, 64):
        log_w = model.log_importance_weights(images(X), repeats * k)  # i.i.d. draws
        log_w = tf.reshape(tf.transpose(tf.reshape(log_w, [repeats, k, 3]), [1, 0, 2]),
                           [k, repeats * 3])
        bounds = tf.reshape(objectives.iwae_bound(log_w), [repeats, 3]).numpy()
        means[k], ses[k] = bounds.mean(0), bounds.std(0, ddof=1) / np.sqrt(repeats)
    np.testing.assert_array_less(np.abs(means[1] - elbo), 5 * ses[1])  # L_1 = ELBO
    ks = sorted(means)
    for small, large in zip(ks, ks[1:]):
        slack = 5 * np.sqrt(ses[small] ** 2 + ses[large] ** 2)
        np.testing.assert_array_less(means[small] - slack, means[large])
    np.testing.assert_array_less(means[1] + 5 * np.sqrt(ses[1] ** 2 + ses[64] ** 2),
                                 means[64])  # a real increase
    for k in ks:
        np.testing.assert_array_less(means[k] - 5 * ses[k], evidence)
    assert np.all(evidence - elbo > 0.5)  # the bound has room to climb


# -- training and metrics ------------------------------------------------------------

IMAGE_SHAPE = (8, 8, 1)


def prototype_images(num=256, seed=0):
    """Noisy copies (5% flipped pixels) of four random binary 8x8 prototypes."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((4, *IMAGE_SHAPE)) > 0.5
    picked = prototypes[rng.integers(0, 4, num)]
    return (picked ^ (rng.random(picked.shape) < 0.05)).astype("float32")


def small_vae(**kwargs):
    return tiny_vae(IMAGE_SHAPE, hidden_units=(32,), **kwargs)


def test_short_fit_raises_the_elbo():
    keras.utils.set_random_seed(0)
    x = prototype_images()
    model = small_vae(num_samples=2)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    before = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)
    history = model.fit(x, epochs=12, batch_size=32, verbose=0).history
    after = model.evaluate(x, batch_size=256, verbose=0, return_dict=True)
    assert set(history) == {"loss", "elbo", "rate", "distortion"}
    assert history["elbo"][-1] > history["elbo"][0] + 5
    assert after["elbo"] > before["elbo"] + 10, (before, after)
    np.testing.assert_allclose(after["loss"], -after["elbo"], rtol=1e-5)


def _numpy_terms(model, x):
    """Rate and distortion at z = posterior mean, written out in numpy (float64)."""
    (w1, b1), (w2, b2) = (layer.get_weights() for layer in
                          (model.encoder.hidden[0], model.encoder.head))
    h = np.maximum(x.reshape(len(x), -1) @ w1 + b1, 0)
    params = h @ w2 + b2
    loc, scale = params[:, :2], np.logaddexp(0, params[:, 2:]) + model.encoder.min_scale
    rate = 0.5 * np.sum(scale ** 2 + loc ** 2 - 1 - 2 * np.log(scale), -1)
    (w3, b3), (w4, b4) = (layer.get_weights() for layer in
                          (model.decoder.hidden[0], model.decoder.out))
    logits = np.maximum(loc @ w3 + b3, 0) @ w4 + b4
    flat = x.reshape(len(x), -1)
    distortion = -np.sum(flat * logits - np.logaddexp(0, logits), -1)
    return rate, distortion


def test_fit_and_evaluate_show_the_hand_computed_metrics():
    """Learning rate 0 keeps the weights fixed; a posterior scale of ~1e-4 makes z the
    posterior mean, so every logged number has a hand computation. The warm-up makes
    the rate weight 0, .5, 1, 1.5 over the four steps (beta 2, 4 warm-up steps)."""
    keras.utils.set_random_seed(1)
    x = prototype_images(64)
    model = small_vae(beta=2.0, kl_warmup_steps=4)
    head = model.encoder.head
    kernel, bias = head.get_weights()
    kernel[:, 2:] = 0.0
    bias[2:] = -30.0  # softplus(-30) ~ 1e-13: scale = min_scale
    head.set_weights([kernel, bias])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0))
    rate, distortion = _numpy_terms(model, x)
    history = model.fit(x, epochs=1, batch_size=16, shuffle=False, verbose=0).history
    per_batch_rate = rate.reshape(4, 16).mean(1)
    per_batch_distortion = distortion.reshape(4, 16).mean(1)
    weights = 2.0 * np.arange(4) / 4
    expected = {"loss": np.mean(per_batch_distortion + weights * per_batch_rate),
                "rate": rate.mean(), "distortion": distortion.mean(),
                "elbo": -(rate + distortion).mean()}
    for name, value in expected.items():
        np.testing.assert_allclose(history[name][0], value, rtol=1e-4, err_msg=name)
    # After warm-up the weight is beta.
    shown = model.evaluate(x, batch_size=16, verbose=0, return_dict=True)
    expected["loss"] = distortion.mean() + 2.0 * rate.mean()
    for name, value in expected.items():
        np.testing.assert_allclose(shown[name], value, rtol=1e-4, err_msg=name)


def test_evaluate_iwae_metric_matches_the_bound_by_hand():
    keras.utils.set_random_seed(2)
    x = prototype_images(32)
    model = small_vae(objective="iwae", num_samples=50)
    model.compile(optimizer="adam")
    shown = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    assert set(shown) == {"loss", "elbo", "rate", "distortion", "iwae"}
    log_w = model.log_importance_weights(x, 50 * 100)
    bounds = objectives.iwae_bound(tf.reshape(log_w, [50, 100 * 32])).numpy()
    se = bounds.std(ddof=1) / np.sqrt(len(bounds))
    se_shown = bounds.std() / np.sqrt(32)  # evaluate used one draw per image
    assert abs(shown["iwae"] - bounds.mean()) < 5 * np.hypot(se, se_shown)
    np.testing.assert_allclose(shown["loss"], -shown["iwae"], rtol=1e-5)
    assert shown["iwae"] >= shown["elbo"]


@pytest.mark.slow
def test_jit_compiled_fit():
    keras.utils.set_random_seed(3)
    x = prototype_images(64)
    model = small_vae()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=True)
    history = model.fit(x, epochs=2, batch_size=64, verbose=0).history
    for name in ("loss", "elbo", "rate", "distortion"):
        assert np.all(np.isfinite(history[name])), name
    np.testing.assert_allclose(history["elbo"], -(np.array(history["rate"])
                                                  + np.array(history["distortion"])),
                               rtol=1e-4)


def test_mirrored_strategy_gives_the_same_step_as_no_strategy():
    x = prototype_images(64)

    def one_step():
        keras.utils.set_random_seed(4)
        model = small_vae()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
        keras.utils.set_random_seed(5)
        history = model.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0).history
        return history, model.get_weights()

    plain_history, plain_weights = one_step()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    assert strategy.num_replicas_in_sync == 1
    with strategy.scope():
        mirrored_history, mirrored_weights = one_step()
    for name, value in plain_history.items():
        np.testing.assert_allclose(mirrored_history[name], value, rtol=1e-6, err_msg=name)
    for a, b in zip(plain_weights, mirrored_weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


_TWO_REPLICAS = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import numpy as np, keras, tfvae
x = (np.random.default_rng(0).random((64, 8, 8, 1)) > 0.5).astype("float32")

def run(strategy):
    with strategy.scope():
        keras.utils.set_random_seed(1)
        model = tfvae.VAE(tfvae.MLPEncoder(2, (16,)), tfvae.MLPDecoder((8, 8, 1), (16,)))
        kernel, bias = model.encoder.head.get_weights()
        kernel[:, 2:], bias[2:] = 0.0, -30.0  # posterior scale = min_scale: z ~ its mean
        model.encoder.head.set_weights([kernel, bias])
        start = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(0.1))
    logs = model.fit(x, epochs=1, batch_size=64, shuffle=False, verbose=0).history
    logs = {k: v[0] for k, v in logs.items()}
    return logs, model.get_weights(), start

plain, plain_w, start = run(tf.distribute.get_strategy())
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
mirrored, mirrored_w, _ = run(strategy)
json.dump({"replicas": strategy.num_replicas_in_sync, "plain": plain, "mirrored": mirrored,
           "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(plain_w, mirrored_w)),
           "update": max(float(np.abs(a - b).max()) for a, b in zip(plain_w, start))},
          sys.stdout)
"""


@pytest.mark.slow
def test_two_replicas_take_the_same_step_as_one_device():
    """Gradients summed over replicas must equal the one-device batch-mean gradient.

    Two logical CPUs need a fresh process (TF fixes its devices at start-up)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [root, os.environ.get("PYTHONPATH", "")]), "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", _TWO_REPLICAS], env=env, check=True,
                         capture_output=True, text=True, timeout=300).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["replicas"] == 2
    for name, value in result["plain"].items():
        np.testing.assert_allclose(result["mirrored"][name], value, rtol=1e-5, err_msg=name)
    assert result["update"] > 1e-2  # a real step, ...
    assert result["weight_diff"] < 1e-4  # ... the same on two replicas


# -- the model's API -------------------------------------------------------------------


def test_api_shapes():
    keras.utils.set_random_seed(6)
    model = small_vae(prior=tfvae.MixturePrior(2, 3))
    x = prototype_images(5)
    assert model.image_shape == IMAGE_SHAPE
    assert model.encode(x).batch_shape == [5]
    samples, codes = model.sample(7, return_codes=True)
    assert samples.shape == (7, *IMAGE_SHAPE) and codes.shape == (7, 2)
    assert model.sample(3).shape == (3, *IMAGE_SHAPE)
    recon = model.reconstruct(x).numpy()
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert model.log_likelihood(x, tf.zeros([4, 5, 2])).shape == (4, 5)
    assert model.log_importance_weights(x, 6).shape == (6, 5)
    terms = model.elbo(x)
    assert set(terms) == {"elbo", "rate", "distortion"}
    assert all(v.shape == (5,) for v in terms.values())
    model.compile(optimizer="adam")
    predicted = model.predict(x, verbose=0)
    assert set(predicted) == {"elbo", "rate", "distortion"}
    # Integer images are cast, not rejected.
    assert model.elbo(x.astype("uint8"))["elbo"].shape == (5,)


# -- serialization -----------------------------------------------------------------

ARCHITECTURES = {
    "mlp": (lambda: tfvae.MLPEncoder(2, (16,)),
            lambda: tfvae.MLPDecoder(IMAGE_SHAPE, (16,), likelihood="gaussian")),
    "conv": (lambda: tfvae.ConvEncoder(2, (4, 8), (8,)),
             lambda: tfvae.ConvDecoder(IMAGE_SHAPE, (8, 4), (8,))),
}
PRIORS = {
    "standard": lambda: None,
    "mixture": lambda: tfvae.MixturePrior(2, num_components=3),
    "vamp": lambda: tfvae.VampPrior(IMAGE_SHAPE, num_pseudo_inputs=3),
}


def _build(arch, prior, **kwargs):
    encoder, decoder = ARCHITECTURES[arch]
    model = tfvae.VAE(encoder(), decoder(), prior=PRIORS[prior](), **kwargs)
    # Perturb every weight so that a forgotten variable cannot pass by being at init.
    rng = np.random.default_rng(7)
    model.set_weights([w + rng.normal(0, 0.1, w.shape).astype(w.dtype)
                       for w in model.get_weights()])
    return model


def _assert_same_model(a, b):
    x = prototype_images(4)
    qa, qb = a.encode(x), b.encode(x)
    np.testing.assert_array_equal(qa.mean(), qb.mean())
    np.testing.assert_array_equal(qa.stddev(), qb.stddev())
    z = np.random.default_rng(8).normal(size=(4, 2)).astype("float32")
    np.testing.assert_array_equal(a.decoder.parameters(z), b.decoder.parameters(z))
    np.testing.assert_array_equal(a.prior_distribution().log_prob(z),
                                  b.prior_distribution().log_prob(z))
    assert type(a.prior) is type(b.prior)


@pytest.mark.parametrize("arch", ARCHITECTURES)
@pytest.mark.parametrize("prior", PRIORS)
def test_keras_file_round_trip(arch, prior, tmp_path):
    keras.utils.set_random_seed(9)
    model = _build(arch, prior, objective="iwae", num_samples=3)
    path = str(tmp_path / "vae.keras")
    model.save(path)
    again = keras.models.load_model(path)
    assert isinstance(again, tfvae.VAE)
    # Equal up to JSON's tuple -> list (the build shapes).
    assert json.dumps(again.get_config()) == json.dumps(model.get_config())
    assert again.objective == "iwae" and again.num_samples == 3
    # Warm starts match weights by path: a loaded model's paths are a fresh one's.
    assert list(warmstart.weights_by_path(again)) == list(warmstart.weights_by_path(model))
    _assert_same_model(model, again)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_vae_config_round_trip(arch):
    keras.utils.set_random_seed(10)
    model = _build(arch, "vamp", beta=0.5, kl_warmup_steps=10, free_bits=0.1,
                   info_alpha=0.2, info_lambda=3.0, mmd_kernel="rbf", kl="sampled")
    config = model.get_config()
    clone = tfvae.VAE.from_config(config)
    assert clone.get_config() == config
    clone.set_weights(model.get_weights())
    _assert_same_model(model, clone)


# -- bad input ---------------------------------------------------------------------


def test_wrong_image_shape_is_a_clear_error():
    model = small_vae()
    model.compile(optimizer="adam")
    message = r"VAE expects images of shape \(batch, 8, 8, 1\), got \(2, 8, 9, 1\)"
    wrong = np.zeros((2, 8, 9, 1), "float32")
    with pytest.raises(ValueError, match=message):
        model.encode(wrong)
    with pytest.raises(ValueError, match=message):
        model.elbo(wrong)
    with pytest.raises(ValueError, match=r"x has shape \(2, 8, 9, 1\); images must "
                       r"have shape \[batch, 8, 8, 1\]"):  # an array: the CLI's words
        model.fit(wrong, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="VAE expects images of shape"):
        model.encode(np.zeros((8, 8, 1), "float32"))  # a missing batch axis


@pytest.mark.parametrize("options, message", [
    (dict(objective="vi"), "Unknown objective 'vi'"),
    (dict(kl="exact"), "Unknown kl 'exact'"),
    (dict(gradient_estimator="reinforce"), "Unknown gradient_estimator 'reinforce'"),
    (dict(mmd_kernel="linear"), "Unknown mmd_kernel 'linear'"),
    (dict(num_samples=0), "num_samples must be >= 1"),
    (dict(gradient_estimator="dreg"), "gradient_estimator='dreg' needs objective='iwae'"),
    (dict(gradient_estimator="score_function", objective="iwae"),
     "gradient_estimator='score_function' needs objective='elbo'"),
    (dict(gradient_estimator="score_function", info_lambda=5.0),
     "gives the encoder no gradient of the InfoVAE MMD term"),
    (dict(prior=tfvae.StandardNormalPrior(3)),
     "prior's latent_dim 3 differs from the encoder's latent_dim 2"),
    (dict(prior=tfvae.VampPrior((8, 4, 1), 2)),
     r"pseudo-inputs have shape \(8, 4, 1\), the model's images \(8, 8, 1\)"),
    (dict(objective="iwae", beta=2.0), "apply to objective='elbo' only"),
    (dict(beta=-1.0), "must be >= 0"),
])
def test_invalid_options_are_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        small_vae(**options)


def test_loss_of_an_empty_batch_is_zero_not_nan():
    # Under a multi-worker strategy the last partial global batch can leave a worker
    # with no image; its share of the loss must be 0, not NaN.
    import numpy as np
    import tfvae
    model = tfvae.VAE(tfvae.MLPEncoder(4, (8,)), tfvae.MLPDecoder((28, 28, 1), (8,)))
    empty = np.zeros((0, 28, 28, 1), "float32")
    loss = model.compute_loss(y_pred=model(empty, training=True))
    assert float(loss) == 0.0
