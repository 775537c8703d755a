"""Tests of tfvae.evaluate against known answers.

The linear-Gaussian model p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) has the exact
marginal p(x) = N(b, W W^T + s^2 I). With orthogonal columns of W its posterior
N(S W^T (x - b) / s^2, S), S = (I + W^T W / s^2)^-1, is diagonal, so an MLP encoder
without hidden layers can represent it exactly (then every log w_i equals log p(x)),
or a deliberately wrong version of it (then the estimate is a strict lower bound that
closes as k grows).
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import VAE, MLPDecoder, MLPEncoder, MixturePrior, VampPrior
from tfvae import evaluate as ev
from tfvae import objectives, resumable, user_files
from tfvae import data
from tiny_models import inverse_softplus, tiny_spatial_model

tfd = tfp.distributions

W = 0.8 * np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -2.0]])  # [P=4, D=2]
B = np.array([0.1, -0.2, 0.3, 0.0])
NOISE = 0.5
IMAGE_SHAPE = (2, 2, 1)


def linear_gaussian_vae(mean_shift=0.0, scale_factor=1.0):
    """The linear-Gaussian VAE; the encoder is exact at shift 0 and factor 1."""
    latent, pixels = W.shape[1], W.shape[0]
    encoder = MLPEncoder(latent, hidden_units=())
    decoder = MLPDecoder(IMAGE_SHAPE, hidden_units=(), likelihood="gaussian")
    model = VAE(encoder, decoder)
    # Decoder Dense output is [H, W, 2] per image: column 2p is loc_p, 2p+1 scale_p.
    kernel = np.zeros([latent, 2 * pixels])
    bias = np.zeros([2 * pixels])
    kernel[:, 0::2] = W.T
    bias[0::2] = B
    bias[1::2] = inverse_softplus(NOISE - decoder.min_scale)
    decoder.out.set_weights([kernel, bias])
    # Encoder Dense output is [loc (D), raw scale (D)].
    cov = np.linalg.inv(np.eye(latent) + W.T @ W / NOISE**2)
    gain = cov @ W.T / NOISE**2  # [D, P]
    kernel = np.zeros([pixels, 2 * latent])
    bias = np.zeros([2 * latent])
    kernel[:, :latent] = gain.T
    bias[:latent] = -gain @ B + mean_shift
    bias[latent:] = inverse_softplus(scale_factor * np.sqrt(np.diag(cov))
                                      - encoder.min_scale)
    encoder.head.set_weights([kernel, bias])
    return model


def exact_log_px(images):
    cov = W @ W.T + NOISE**2 * np.eye(len(B))
    marginal = tfd.MultivariateNormalTriL(B, np.linalg.cholesky(cov))
    return marginal.log_prob(images.reshape(len(images), -1).astype(np.float64)).numpy()


def sample_images(n, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal([n, W.shape[1]])
    x = z @ W.T + B + NOISE * rng.standard_normal([n, len(B)])
    return x.reshape(n, *IMAGE_SHAPE).astype(np.float32)


def test_exact_posterior_gives_exact_log_px_for_any_k_and_chunking():
    model = linear_gaussian_vae()
    images = sample_images(50)
    exact = exact_log_px(images)
    for k, chunk in [(1, None), (7, 3), (40, 40)]:
        estimate = ev.importance_sampled_log_px(model, images, k, batch_size=16,
                                                chunk_size=chunk, verbose=0,
                                                jit_compile=False)
        assert estimate.values.shape == (50,)
        np.testing.assert_allclose(estimate.values, exact, atol=2e-3)


def test_estimate_is_a_lower_bound_that_converges_to_log_px():
    model = linear_gaussian_vae(mean_shift=0.4, scale_factor=1.6)
    images = sample_images(1000, seed=1)
    exact = exact_log_px(images)
    gaps = {}
    for k in (1, 10, 500):
        estimate = ev.importance_sampled_log_px(model, images, k, batch_size=100,
                                                verbose=0, jit_compile=False)
        diff = estimate.values - exact
        gaps[k] = (diff.mean(), diff.std(ddof=1) / math.sqrt(len(diff)))
    # Below log p(x) by clearly more than the Monte Carlo error at small k...
    assert gaps[1][0] + 4 * gaps[1][1] < 0
    assert gaps[10][0] + 4 * gaps[10][1] < 0
    # ... tighter as k grows ...
    assert gaps[1][0] < gaps[10][0] < gaps[500][0]
    # ... and converged at large k.
    assert abs(gaps[500][0]) < 0.02


def test_single_sample_estimate_equals_the_elbo_in_expectation():
    model = linear_gaussian_vae(mean_shift=0.3, scale_factor=1.4)
    images = sample_images(4000, seed=2)
    k1 = ev.importance_sampled_log_px(model, images, 1, batch_size=1000, seed=3,
                                      verbose=0, jit_compile=False)
    terms = ev.evaluate_elbo(model, images, batch_size=1000, seed=4, jit_compile=False)
    # Reference: the ELBO with the expectation over q done by 500 samples.
    reference = np.mean(model.elbo(images, num_samples=500)["elbo"].numpy())
    tolerance = 4 * math.hypot(k1.stderr, terms["elbo"].stderr)
    assert abs(k1.mean - reference) < 4 * k1.stderr + 0.01
    assert abs(k1.mean - terms["elbo"].mean) < tolerance
    np.testing.assert_allclose(terms["elbo"].values,
                               -(terms["rate"].values + terms["distortion"].values),
                               rtol=1e-5)
    assert k1.mean < np.mean(exact_log_px(images))


def test_chunked_and_unchunked_agree_within_monte_carlo_error():
    model = linear_gaussian_vae(mean_shift=0.4, scale_factor=1.6)
    images = sample_images(300, seed=5)
    whole = ev.importance_sampled_log_px(model, images, 50, batch_size=64,
                                         chunk_size=50, seed=1, verbose=0)
    chunked = ev.importance_sampled_log_px(model, images, 50, batch_size=64,
                                           chunk_size=8, seed=2, verbose=0,
                                           jit_compile=False)
    diff = whole.values - chunked.values
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff)) + 1e-6
    # Same seed, same chunking: the stateless sampler repeats itself.
    again = ev.importance_sampled_log_px(model, images, 50, batch_size=64,
                                         chunk_size=50, seed=1, verbose=0)
    np.testing.assert_allclose(whole.values, again.values, rtol=1e-6)


def test_callable_path_combines_chunks_exactly():
    model = linear_gaussian_vae()
    images = sample_images(30, seed=6)

    def log_prob(x, k):
        return objectives.iwae_bound(model.log_importance_weights(x, k))

    estimate = ev.importance_sampled_log_px(log_prob, images, 10, batch_size=8,
                                            chunk_size=4, verbose=0)
    np.testing.assert_allclose(estimate.values, exact_log_px(images), atol=2e-3)
    # A fake callable whose every weight in a chunk of s samples is s: the total is
    # log(sum_c s_c^2 / k) = log((9 + 9 + 9 + 1) / 10) for chunks of 3, 3, 3, 1.
    sizes = []

    def fake(x, k):
        sizes.append(k)
        return tf.fill([tf.shape(x)[0]], math.log(k))

    estimate = ev.importance_sampled_log_px(fake, images[:8], 10, batch_size=8,
                                            chunk_size=3, verbose=0)
    assert sizes == [3, 3, 3, 1]
    np.testing.assert_allclose(estimate.values, math.log(2.8), rtol=1e-6)


def test_active_units_and_kl_per_dim_on_a_constructed_encoder():
    rng = np.random.default_rng(0)
    images = rng.random([400, 2, 2, 1]).astype(np.float32)
    encoder = MLPEncoder(3, hidden_units=())
    kernel = np.zeros([4, 6])
    kernel[:, 0] = [1.0, -1.0, 0.5, 0.0]  # variance ~ 0.19: active
    kernel[:, 1] = [0.1, 0.0, 0.0, 0.0]   # variance ~ 0.0008: inactive
    bias = np.zeros(6)                     # dim 2: constant mean, inactive
    bias[3:] = inverse_softplus(np.array([0.5, 1.0, 0.9]) - encoder.min_scale)
    model = VAE(encoder, MLPDecoder((2, 2, 1), hidden_units=()))
    encoder.head.set_weights([kernel, bias])
    stats = ev.latent_statistics(model, images, batch_size=64)
    means = images.reshape(400, 4) @ kernel[:, :3]
    np.testing.assert_allclose(stats["activity"], means.var(axis=0), rtol=1e-4, atol=1e-9)
    assert stats["active_units"] == 1
    scales = np.array([0.5, 1.0, 0.9])
    expected_kl = np.mean(0.5 * (means**2 + scales**2 - 1) - np.log(scales), axis=0)
    np.testing.assert_allclose(stats["kl_per_dim"], expected_kl, rtol=1e-4, atol=1e-6)
    # From a callable (e.g. a SavedModel's encode signature): no KL per dimension.
    from_callable = ev.latent_statistics(lambda x: model.encode(x).mean(), images)
    assert from_callable["active_units"] == 1 and from_callable["kl_per_dim"] is None


def test_bits_per_dim_known_cases():
    # A uniform density on [0, 1]^D costs exactly 8 bits per 8-bit pixel.
    assert ev.bits_per_dim(0.0, 784) == pytest.approx(8.0)
    # Density 1/2 per dimension: one more bit each.
    assert ev.bits_per_dim(-784 * math.log(2.0), 784) == pytest.approx(9.0)
    # A density 2^D on [0, 1/2]^D: one bit less; and arrays work.
    np.testing.assert_allclose(ev.bits_per_dim(np.array([10 * math.log(2.0)]), 10),
                               [7.0])
    with pytest.raises(ValueError):
        ev.bits_per_dim(0.0, 0)


def test_datasets_and_report():
    model = linear_gaussian_vae(mean_shift=0.2)
    images = sample_images(37, seed=7)
    labels = np.arange(37)
    from_array = ev.importance_sampled_log_px(model, images, 5, batch_size=10,
                                              verbose=0, seed=9, jit_compile=False)
    for data in (tf.data.Dataset.from_tensor_slices((images, labels)),
                 tf.data.Dataset.from_tensor_slices({"image": images,
                                                     "label": labels}).batch(10)):
        from_dataset = ev.importance_sampled_log_px(model, data, 5, batch_size=10,
                                                    verbose=0, seed=9, jit_compile=False)
        np.testing.assert_allclose(from_dataset.values, from_array.values, rtol=1e-5)
    report = ev.evaluate(model, images, num_samples=20, batch_size=16, verbose=0,
                         jit_compile=False)
    for key in ("nll", "nll_stderr", "elbo", "rate", "distortion", "active_units",
                "kl_per_dim", "nll_bits_per_dim", "elbo_bits_per_dim", "nll_seconds"):
        assert key in report, key
    assert report["num_images"] == 37 and report["k"] == 20
    assert report["nll"] <= -report["elbo"] + 5 * report["elbo_stderr"]
    with pytest.raises(ValueError, match="shape"):
        ev.importance_sampled_log_px(model, images[0], 5, verbose=0, jit_compile=False)


@pytest.mark.slow
def test_saved_model_agrees_with_the_keras_model(tmp_path):
    export = pytest.importorskip("tfvae.export")
    model = VAE(MLPEncoder(2, hidden_units=(16,)), MLPDecoder((4, 4, 1), (16,)))
    images = (np.random.default_rng(8).random([200, 4, 4, 1]) < 0.3).astype(np.float32)
    path = export.export_saved_model(model, str(tmp_path / "saved"))
    functions = ev.saved_model_functions(tf.saved_model.load(path))
    assert functions["likelihood"] == "bernoulli"
    assert functions["image_shape"] == (4, 4, 1)
    from_keras = ev.importance_sampled_log_px(model, images, 100, batch_size=50,
                                              verbose=0, jit_compile=False)
    from_saved = ev.importance_sampled_log_px(functions["log_prob"], images, 100,
                                              batch_size=50, chunk_size=40, verbose=0)
    diff = from_keras.values - from_saved.values
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff)) + 1e-4
    elbo_keras = ev.evaluate_elbo(model, images, jit_compile=False)["elbo"]
    elbo_saved = ev.evaluate_elbo(functions["elbo"], images)["elbo"]
    diff = elbo_keras.values - elbo_saved.values
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff)) + 1e-4
    report = ev.evaluate(functions, images, num_samples=10, batch_size=50, verbose=0)
    keras_stats = ev.latent_statistics(model, images)
    np.testing.assert_allclose(report["activity"], keras_stats["activity"], rtol=1e-4)
    assert "kl_per_dim" not in report and "nll_bits_per_dim" not in report
    gaussian = VAE(MLPEncoder(2, hidden_units=(8,)),
                   MLPDecoder((4, 4, 1), (8,), likelihood="gaussian"))
    path = export.export_saved_model(gaussian, str(tmp_path / "gaussian"))
    functions = ev.saved_model_functions(tf.saved_model.load(path))
    assert functions["likelihood"] == "gaussian"
    report = ev.evaluate(functions, images[:20], num_samples=5, verbose=0)
    assert report["nll_bits_per_dim"] == pytest.approx(
        ev.bits_per_dim(-report["nll"], 16))


@pytest.mark.slow
def test_evaluate_tool_on_a_run_directory(tmp_path):
    import json
    import subprocess
    import sys

    model = VAE(MLPEncoder(2, hidden_units=(8,)), MLPDecoder((4, 4, 1), (8,)))
    run = tmp_path / "run"
    run.mkdir()
    model.save(str(run / "model.keras"))
    images = np.random.default_rng(9).integers(0, 256, [30, 4, 4, 1]).astype(np.uint8)
    np.save(tmp_path / "images.npy", images)
    output = tmp_path / "report.json"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def evaluate(*flags):
        result = subprocess.run(
            [sys.executable, "-m", "tools.evaluate", str(run), "--num_samples=20",
             f"--images_npy={tmp_path / 'images.npy'}", f"--output={output}",
             "--verbose=0", "--nojit_compile",
             "--allow_grey_levels", *flags],  # grey uint8 images, a Bernoulli model
            cwd=repo, capture_output=True, text=True, timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        assert result.returncode == 0, result.stderr[-3000:]
        return result.stdout, json.loads(output.read_text())

    stdout, report = evaluate()
    assert "NLL (k=20)" in stdout
    assert report["num_images"] == 30 and report["k"] == 20
    assert not os.path.exists(f"{output}.partial.npz")  # deleted with the report
    assert np.isfinite(report["nll"]) and report["machine"]["cpu_cores"] >= 1
    stdout, report = evaluate("--num_images=10")
    assert report["num_images"] == 10 and "10 of 30 drawn with seed 0" in stdout


def test_a_killed_nll_evaluation_resumes_from_its_kept_batches(tmp_path, capsys):
    model = linear_gaussian_vae(mean_shift=0.3)  # inexact: estimates depend on the seed
    images = sample_images(50)
    run = dict(num_samples=10, batch_size=10, jit_compile=False, verbose=0)
    whole = ev.importance_sampled_log_px(model, images, **run)
    path, key = str(tmp_path / "nll.partial.npz"), {"model": "linear", "k": 10}

    class Killed(Exception):
        pass

    kept = resumable.BatchResults(path, key, every_s=0)  # written after every batch
    keep = kept.add

    def add_then_die_after_three(index, values, seconds):
        keep(index, values, seconds)
        if len(kept.done) == 3:
            raise Killed

    kept.add = add_then_die_after_three
    with pytest.raises(Killed):
        ev.importance_sampled_log_px(model, images, **run, kept=kept)
    again = resumable.BatchResults(path, key)
    assert sorted(again.done) == [0, 1, 2]
    first_three = np.mean(whole.values[:30])
    assert f"log p(x) {first_three:.3f} +- " in ev.so_far(again)
    assert "(30 images) finished" in ev.so_far(again)
    capsys.readouterr()
    resumed = ev.importance_sampled_log_px(model, images, **{**run, "verbose": 1},
                                           kept=again)
    np.testing.assert_allclose(resumed.values, whole.values, rtol=1e-6)
    shown = capsys.readouterr().out  # the bar counts (and times) the 20 left
    assert "30 images) finished" in shown and "20/20" in shown and "/50" not in shown
    with pytest.raises(ValueError, match="another computation"):
        resumable.BatchResults(path, {"model": "another", "k": 10})
    with open(path, "rb") as f:
        whole_file = f.read()
    for damaged in (whole_file[:len(whole_file) // 2], b"not a npz"):  # cut short, junk
        with open(path, "wb") as f:
            f.write(damaged)
        with pytest.raises(ValueError, match="cannot be read.*delete it"):
            resumable.BatchResults(path, key)


def test_a_resume_names_the_model_by_its_contents_not_its_path_or_time(tmp_path):
    # tools.evaluate keys the kept batches by this digest: a clone of the repository
    # on another machine (new paths, new times) resumes, another model does not.
    model = tmp_path / "a" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"weights" * 1000)
    copy = tmp_path / "b.keras"
    copy.write_bytes(model.read_bytes())
    os.utime(copy, (0, 0))
    digest = user_files.content_digest
    assert digest(str(copy)) == digest(str(model))
    copy.write_bytes(b"weights" * 999 + b"weighTs")
    assert digest(str(copy)) != digest(str(model))
    moved = tmp_path / "moved"
    os.rename(model.parent, moved)  # a folder: its files' names and contents
    before = digest(str(moved))
    (moved / "model.keras").rename(moved / "other.keras")
    assert digest(str(moved)) != before
    (moved / "other.keras").rename(moved / "model.keras")
    assert digest(str(moved)) == before == digest(str(moved) + "/")


def test_the_progress_bar_shows_the_running_mean_to_the_end(capsys):
    # Keras averages a bar's values over its updates and shows the last update's own
    # value at the end: the bar gets the running mean as a figure to show as given.
    images = sample_images(50)
    estimate = ev.importance_sampled_log_px(linear_gaussian_vae(mean_shift=0.3), images,
                                            num_samples=10, batch_size=10,
                                            jit_compile=False, verbose=1)
    shown = capsys.readouterr().out.rsplit("log_px: ", 1)[1].split()[0]
    assert abs(estimate.values[-10:].mean() - estimate.mean) > 1e-3  # the last batch's
    assert float(shown) == pytest.approx(estimate.mean, abs=1e-3)


def test_evaluation_subsets_are_random_not_a_prefix():
    # An ordered split (say, two kinds of image, 500 of each): a subset has both.
    index = data.random_rows(1000, 100, seed=0)
    assert len(set(index)) == 100 and list(index) == sorted(index)
    assert 30 < np.sum(index < 500) < 70
    np.testing.assert_array_equal(index, data.random_rows(1000, 100, seed=0))
    assert not np.array_equal(index, data.random_rows(1000, 100, seed=1))
    assert data.random_rows(1000, 1000, seed=0) is None  # all of them
    assert data.random_rows(1000, 0, seed=0) is None
    # Shuffled: the same subset in a random order; all rows, permuted.
    shuffled = data.random_rows(1000, 100, seed=0, shuffled=True)
    np.testing.assert_array_equal(np.sort(shuffled), index)
    assert list(shuffled) != sorted(shuffled)
    everything = data.random_rows(1000, 0, seed=0, shuffled=True)
    np.testing.assert_array_equal(np.sort(everything), np.arange(1000))
    assert 30 < np.sum(everything[:100] < 500) < 70  # its first rows are of both kinds


@pytest.mark.slow
def test_benchmark_tool_takes_the_configs_model_and_steps_per_execution(tmp_path):
    import json
    import subprocess
    import sys

    output = tmp_path / "benchmark.json"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "tools.benchmark", "--config=configs/mnist_2d.cfg",
         "--batch_size=50", "--train_images=200", "--warmup_epochs=1", "--epochs=1",
         "--num_samples=8", "--nll_images=20", "--nll_batch_size=10", "--jit=false",
         "--precision=float32,mixed_bfloat16", f"--output={output}"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "batch 50, 20 steps per execution" in result.stdout  # the config's value
    report = json.loads(output.read_text())
    assert set(report["results"]) == {"jit_compile=False, float32",
                                      "jit_compile=False, mixed_bfloat16"}
    train = report["results"]["jit_compile=False, float32"]["train"]
    assert train["images_per_s"] > 0 and len(train["epoch_s"]) == 1
    # mnist_2d.cfg's networks: 784-500-500-(2 means, 2 scales) and 2-500-500-784.
    assert train["params"] == (784 * 500 + 500 + 500 * 500 + 500 + 500 * 4 + 4
                               + 2 * 500 + 500 + 500 * 500 + 500 + 500 * 784 + 784)
    # Their matmuls: 2 FLOPs per weight forward, 4 backward (inputs' and weights'
    # gradients; the first layer's input gradient is not needed).
    weights = 784 * 500 + 500 * 500 + 500 * 4 + 2 * 500 + 500 * 500 + 500 * 784
    assert 4 * weights < train["gflop_per_image"] * 1e9 < 7 * weights
    assert report["machine"]["matmul_tflop_per_s"]["bfloat16"] > 0
    assert report["results"]["jit_compile=False, float32"]["nll"]["num_samples"] == 8
    # The NLL is timed as tools.evaluate computes it: the float32 copy of a bf16 model.
    bf16 = report["results"]["jit_compile=False, mixed_bfloat16"]
    assert bf16["nll"]["compute_dtypes"] == ["float32"]


@pytest.mark.slow
def test_import_tfvae_gives_the_modules_the_readme_names():
    """Without importing a submodule by hand (issue 27); tfvae.train on first use."""
    code = ("import tfvae; tfvae.evaluate.importance_sampled_log_px; tfvae.plots; "
            "tfvae.presets.list_presets; tfvae.sample_quality.kid; "
            "tfvae.objectives; print(tfvae.train.train_and_evaluate.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "train_and_evaluate"


def test_log_px_in_one_call_from_arrays_dicts_and_datasets(capsys):
    model = VAE(MLPEncoder(2, hidden_units=(8,)), MLPDecoder((4, 4, 1), (8,)))
    images = (np.random.default_rng(1).random([37, 4, 4, 1]) < 0.3).astype(np.float32)
    estimator = ev.importance_sampled_log_px(model, images, 20, batch_size=10, seed=4,
                                             verbose=0)
    for data in (images, (images * 255).astype(np.uint8), {"images": images},
                 tf.data.Dataset.from_tensor_slices(images).batch(10)):
        estimate = model.log_px(data, num_samples=20, batch_size=10, seed=4)
        np.testing.assert_array_equal(estimate.values, estimator.values)
    assert estimate.mean == pytest.approx(np.mean(estimator.values))
    assert 0 < estimate.stderr < 1 and estimate.values.shape == (37,)
    assert estimate.mean > np.mean(model.elbo(images)["elbo"]) - 3 * estimate.stderr
    capsys.readouterr()
    labelled = tf.data.Dataset.from_tensor_slices((images, np.arange(37))).batch(10)
    model.log_px(labelled, num_samples=2, batch_size=10, verbose=1)
    assert "37/37" in capsys.readouterr().out  # the bar's total, not "Unknown"


def test_a_batch_larger_than_the_data_computes_the_data_only():
    """Batches are padded to the first batch's size, min(batch_size, N): a batch_size
    of ten million on 37 images (which ran out of memory when padded to it) draws
    exactly what batch_size=37 draws."""
    model = VAE(MLPEncoder(2, hidden_units=(8,)), MLPDecoder((4, 4, 1), (8,)))
    images = (np.random.default_rng(1).random([37, 4, 4, 1]) < 0.3).astype(np.float32)

    def figures(batch_size):
        return (ev.importance_sampled_log_px(model, images, 20, batch_size=batch_size,
                                             seed=4, verbose=0).values,
                ev.evaluate_elbo(model, images, batch_size=batch_size, seed=4)["elbo"].values)

    for huge, exact in zip(figures(10**7), figures(37)):
        np.testing.assert_array_equal(huge, exact)


def test_the_default_chunk_fits_the_largest_tensor_of_a_sample_in_memory():
    """The largest tensor of one sample of one image, not the weights: a 512-unit
    hidden layer's activations (2 kB), not its 64x512 kernel (128 kB); a conv cell of
    16 channels on 8x8 images at least 8*8*16 floats. The chunk fills a quarter of the
    memory at LIVE_TENSORS such tensors per decoder row, at most MAX_ROWS rows."""
    mlp = VAE(MLPEncoder(2, hidden_units=(512,)), MLPDecoder((8, 8, 1), (512,)))
    images = np.zeros([10, 8, 8, 1], np.float32)
    assert ev.largest_tensor_bytes(mlp, tf.constant(images)) == 512 * 4
    spatial = tiny_spatial_model(cell_channels=16)
    assert ev.largest_tensor_bytes(spatial, tf.constant(images)) >= 8 * 8 * 16 * 4
    row = ev.LIVE_TENSORS * 512 * 4
    for memory, chunk in ((4 * row * 1000, 100), (4 * row * 5, 1), (1 << 50, 1000)):
        assert ev.default_chunk_size(mlp, images, 10, 5000, memory=memory) == chunk
    assert ev.default_chunk_size(mlp, images, 10, 20, memory=1 << 50) == 20  # <= k


def test_the_memory_to_fill_is_the_containers_limit_where_lower(tmp_path):
    machine = ev.physical_memory(limits=())
    assert machine > 0
    limit, unlimited = tmp_path / "memory.max", tmp_path / "v2_no_limit"
    limit.write_text(f"{machine // 3}\n")
    unlimited.write_text("max\n")
    assert ev.physical_memory(limits=(str(unlimited), str(tmp_path / "absent"))) == machine
    assert ev.physical_memory(limits=(str(unlimited), str(limit))) == machine // 3
