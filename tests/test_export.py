"""Tests of tfvae.export: SavedModel signatures, TF1 loading, TFLite, bad inputs."""

import json
import os
import re
import stat
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import export, user_files
from pattern_data import binary_images
from tiny_models import inverse_softplus, tiny_vae

IMAGE_SHAPE = (8, 8, 1)
LATENT_DIM = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}


@pytest.fixture(scope="module")
def bernoulli_model():
    return tiny_vae(IMAGE_SHAPE, LATENT_DIM, (32,), seed=1)


@pytest.fixture(scope="module")
def bernoulli_export(bernoulli_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    return export.export_model(bernoulli_model, str(base), name="tiny")


@pytest.fixture(scope="module")
def loaded(bernoulli_export):
    return tf.saved_model.load(bernoulli_export["saved_model"])


@pytest.fixture(scope="module")
def mixture_model():
    """Gaussian likelihood, 2-component prior: weights 0.8 / 0.2 at -10 / +10."""
    keras.utils.set_random_seed(2)
    model = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (16,)),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (16,), likelihood="gaussian"),
                      prior=tfvae.MixturePrior(LATENT_DIM, num_components=2))
    model.prior.logits.assign(np.log([0.8, 0.2]).astype(np.float32))
    model.prior.locs.assign(np.array([[-10.0] * LATENT_DIM, [10.0] * LATENT_DIM],
                                     np.float32))
    model.prior.raw_scales.assign(np.full((2, LATENT_DIM), inverse_softplus(0.01),
                                          np.float32))
    return model


@pytest.fixture(scope="module")
def mixture_export(mixture_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    return export.export_model(mixture_model, str(base), name="mixture")


def litert(path):
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_path=path)


# -- SavedModel --------------------------------------------------------------------------

def test_signatures_follow_the_contract(loaded, mixture_export):
    expected = {
        "serving_default": ({"num_samples"}, {"images", "z"}),
        "sample": ({"num_samples"}, {"images", "z"}),
        "encode": ({"images"}, {"loc", "scale"}),
        "decode": ({"z"}, {"images", "logits"}),
        "reconstruct": ({"images"}, {"images"}),
        "log_prob": ({"images", "num_samples"}, {"log_prob"}),
        "elbo": ({"images"}, {"elbo", "distortion", "rate"}),
        "sample_at_temperature": ({"num_samples", "temperature"}, {"images", "z"}),
    }
    assert set(loaded.signatures) == set(expected)
    for key, (inputs, outputs) in expected.items():
        function = loaded.signatures[key]
        assert set(function.structured_input_signature[1]) == inputs, key
        assert set(function.structured_outputs) == outputs, key
    gaussian = tf.saved_model.load(mixture_export["saved_model"])
    assert "sample_at_temperature" not in gaussian.signatures  # no one mean to cool to
    assert set(gaussian.signatures["decode"].structured_outputs) == {
        "images", "loc", "scale"}


def test_encode_decode_reconstruct_match_keras(bernoulli_model, loaded):
    images = binary_images(16)
    encoded = loaded.signatures["encode"](images=tf.constant(images))
    posterior = bernoulli_model.encode(images).distribution
    np.testing.assert_allclose(encoded["loc"], posterior.loc, atol=1e-5)
    np.testing.assert_allclose(encoded["scale"], posterior.scale, atol=1e-5)

    z = np.random.default_rng(3).normal(size=(16, LATENT_DIM)).astype(np.float32)
    decoded = loaded.signatures["decode"](z=tf.constant(z))
    likelihood = bernoulli_model.decode(z)
    np.testing.assert_allclose(decoded["images"], likelihood.mean(), atol=1e-5)
    np.testing.assert_allclose(decoded["logits"],
                               likelihood.distribution.logits_parameter(), atol=1e-5)

    reconstructed = loaded.signatures["reconstruct"](images=tf.constant(images))
    np.testing.assert_allclose(reconstructed["images"],
                               bernoulli_model.reconstruct(images), atol=1e-5)


def test_gaussian_decode_exports_loc_and_scale(mixture_model, mixture_export):
    loaded_model = tf.saved_model.load(mixture_export["saved_model"])
    z = np.random.default_rng(4).normal(size=(5, LATENT_DIM)).astype(np.float32)
    decoded = loaded_model.signatures["decode"](z=tf.constant(z))
    pixels = mixture_model.decode(z).distribution
    np.testing.assert_allclose(decoded["loc"], pixels.loc, atol=1e-5)
    np.testing.assert_allclose(decoded["scale"], pixels.scale, atol=1e-5)
    np.testing.assert_allclose(decoded["images"], pixels.loc, atol=1e-5)


def mixture_fraction_ok(z):
    """The draws sit at -10 or +10 (scale 0.01), about 20% of them at +10."""
    z = np.asarray(z)
    assert z.shape == (2000, LATENT_DIM)
    upper = z[:, 0] > 0
    assert np.all(np.abs(np.abs(z) - 10.0) < 0.1)
    assert np.all((z > 0) == upper[:, None])  # one component per draw, all dims
    # Binomial(2000, 0.2): standard deviation of the fraction is 0.009.
    assert abs(upper.mean() - 0.2) < 0.04


def test_mixture_prior_sampling_in_the_saved_model(mixture_export):
    loaded_model = tf.saved_model.load(mixture_export["saved_model"])
    out = loaded_model.signatures["serving_default"](num_samples=tf.constant(2000))
    mixture_fraction_ok(out["z"])
    assert out["images"].shape == (2000, *IMAGE_SHAPE)


def test_vamp_prior_exports_its_sampler():
    model = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (8,)),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (8,)),
                      prior=tfvae.VampPrior(IMAGE_SHAPE, num_pseudo_inputs=4))
    out = export.serving_module(model).sample(tf.constant(6))
    assert out["z"].shape == (6, LATENT_DIM)
    assert out["images"].shape == (6, *IMAGE_SHAPE)
    assert np.all(np.isfinite(out["z"]))


def test_sample_at_temperature_draws_the_prior_mean_when_cold(bernoulli_model, loaded,
                                                             bernoulli_export,
                                                             mixture_export):
    from export_parity import check_cooled_samples
    from tools.samplers import load_sampler
    check_cooled_samples(bernoulli_model, loaded.signatures, bernoulli_export)
    mean = bernoulli_model.decode(np.zeros([1, LATENT_DIM], np.float32)).mean()
    for path in (bernoulli_export["saved_model"], bernoulli_export["tflite_float32"]):
        sampler = load_sampler(path)
        np.testing.assert_allclose(sampler.sample(2, temperature=1e-6),
                                   np.repeat(mean, 2, axis=0), atol=1e-5)
        with pytest.raises(ValueError, match="temperature gives 2 temperatures"):
            sampler.sample(2, temperature=[0.5, 1.0])
    with pytest.raises(ValueError, match="has no sample_at_temperature signature"):
        load_sampler(mixture_export["saved_model"]).sample(2, temperature=0.5)


def test_log_prob_is_the_elbo_at_one_sample_and_higher_with_more(loaded):
    images = tf.constant(binary_images(400, seed=5))
    elbo = loaded.signatures["elbo"](images=images)
    np.testing.assert_allclose(elbo["elbo"], -(elbo["distortion"] + elbo["rate"]),
                               rtol=1e-5)
    single = loaded.signatures["log_prob"](images=images, num_samples=tf.constant(1))
    many = loaded.signatures["log_prob"](images=images, num_samples=tf.constant(100))
    difference = single["log_prob"].numpy() - elbo["elbo"].numpy()
    standard_error = difference.std() / np.sqrt(len(difference))
    assert abs(difference.mean()) < 4 * standard_error + 1e-3
    gain = many["log_prob"].numpy() - single["log_prob"].numpy()
    assert gain.mean() > 4 * gain.std() / np.sqrt(len(gain))


def test_log_prob_chunks_count_every_sample_once():
    """With q(z|x) = p(z) and a decoder that ignores z, every log weight equals
    log p(x|z) exactly, so log 1/k sum_i w_i is that value only if the chunked loop
    draws exactly k samples."""
    model = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (4,)),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (4,)))
    head = model.encoder.head.params  # the Dense layer of the Gaussian head
    head.kernel.assign(tf.zeros_like(head.kernel))
    unit_scale = inverse_softplus(1.0 - 1e-4)  # softplus + the 1e-4 floor = 1
    head.bias.assign(np.array([0.0] * LATENT_DIM + [unit_scale] * LATENT_DIM, np.float32))
    out = model.decoder.out
    out.kernel.assign(tf.zeros_like(out.kernel))
    logits = np.random.default_rng(6).normal(size=out.bias.shape).astype(np.float32)
    out.bias.assign(logits)
    images = binary_images(3, seed=7)
    exact = np.sum(images.reshape(3, -1) * logits - np.logaddexp(0, logits), axis=1)
    module = export.serving_module(model, log_prob_rows=8)  # chunks of 2 samples
    for k in (1, 7, 300):
        got = module.log_prob(tf.constant(images), tf.constant(k))["log_prob"]
        np.testing.assert_allclose(got, exact, rtol=1e-5, err_msg=f"k={k}")


@pytest.mark.slow
def test_saved_model_cli_runs_the_tf1_loader(bernoulli_export, tmp_path):
    np.save(tmp_path / "images.npy", binary_images(4))
    np.save(tmp_path / "num_samples.npy", np.array(20, np.int32))
    command = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "run",
               "--dir", bernoulli_export["saved_model"], "--tag_set", "serve",
               "--signature_def", "log_prob", "--outdir", str(tmp_path / "out"),
               "--inputs", f"images={tmp_path / 'images.npy'};"
                           f"num_samples={tmp_path / 'num_samples.npy'}"]
    result = subprocess.run(command, capture_output=True, text=True, env=QUIET_ENV,
                            timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    log_prob = np.load(tmp_path / "out" / "log_prob.npy")
    assert log_prob.shape == (4,) and np.all(np.isfinite(log_prob))
    assert np.all(log_prob < 0)


def test_variables_are_stored_once(bernoulli_model, bernoulli_export):
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in bernoulli_model.weights)
    data = os.path.join(bernoulli_export["saved_model"], "variables",
                        "variables.data-00000-of-00001")
    assert weight_bytes <= os.path.getsize(data) < weight_bytes * 1.2 + 4096


def test_metadata_describes_the_model(bernoulli_model, bernoulli_export):
    with open(bernoulli_export["metadata"], encoding="utf-8") as f:
        info = json.load(f)
    assert info["image_shape"] == list(IMAGE_SHAPE)
    assert info["likelihood"] == "bernoulli"
    assert info["latent_dim"] == LATENT_DIM
    assert info["tfvae_version"] == tfvae.__version__
    if os.path.exists(os.path.join(REPO, ".git")):
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", info["tfvae_commit"])
    assert info["version"] == 1 and info["tflite"] == {"float32": "tiny.tflite"}
    rebuilt = tfvae.VAE.from_config(info["model_config"])
    assert rebuilt.count_params() == bernoulli_model.count_params()
    assert info["keras"] == "tiny.keras"


def test_the_version_folder_is_a_preset(bernoulli_model, bernoulli_export):
    """Its .keras file holds the weights without the optimizer, and records the
    version that wrote it."""
    again = tfvae.VAE.from_preset(bernoulli_export["saved_model"])
    for ours, theirs in zip(bernoulli_model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert getattr(again, "optimizer", None) is None  # not compiled: no state
    assert user_files.keras_writer(bernoulli_export["keras"]) == f"tfvae {tfvae.__version__}"


def test_metadata_of_an_older_export_carries_its_figures_only(bernoulli_model, tmp_path):
    older = {"tfvae_version": "0.1.0", "version": 7, "test_nll": 88.7, "name": "old"}
    paths = export.export_model(bernoulli_model, str(tmp_path), "vae", tflite=(),
                                metadata=older, with_keras=False)
    with open(paths["metadata"], encoding="utf-8") as f:
        info = json.load(f)
    assert (info["tfvae_version"], info["version"], info["name"], info["test_nll"]) == (
        tfvae.__version__, 1, "vae", 88.7)
    assert "keras" not in info and "keras" not in paths


# -- bad input at serving time -------------------------------------------------------------

# Called repeatedly: with the full static shape in the signature, a wrong shape crashed
# deep in the graph in about a third of the calls (grappler dropped the check's order).
@pytest.mark.parametrize("shape", [(2, 7, 8, 1), (2, 8, 8), (2, 8, 8, 3), (2, 64),
                                   (1, 2, 8, 8, 1)])
def test_wrong_image_shape_is_named(loaded, shape):
    images = tf.zeros(shape)
    got = "got.*" + ".*".join(map(str, shape))
    for key in ("encode", "reconstruct", "elbo") * 5:
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"images must have shape \[batch, 8, 8, 1\], " + got):
            loaded.signatures[key](images=images)


@pytest.mark.parametrize("shape",
                         [(2, LATENT_DIM + 1), (2, 1, LATENT_DIM), (LATENT_DIM,), ()])
def test_wrong_code_shape_is_named(loaded, shape):
    for _ in range(15):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=rf"z must have shape \[batch, {LATENT_DIM}\]"):
            loaded.signatures["decode"](z=tf.zeros(shape))


def test_wrong_dtype_and_range_and_count_are_named(loaded):
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float"):
        loaded.signatures["encode"](images=tf.zeros((2, *IMAGE_SHAPE), tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be float32 in"):
        loaded.signatures["encode"](images=tf.fill((2, *IMAGE_SHAPE), 255.0))
    for count in (0, -3):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="num_samples must be a positive integer"):
            loaded.signatures["sample"](num_samples=tf.constant(count))
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="num_samples must be a positive integer"):
            loaded.signatures["log_prob"](images=tf.zeros((2, *IMAGE_SHAPE)),
                                          num_samples=tf.constant(count))
    for temperature in (0.0, -1.0, np.nan, np.inf):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match="temperature must be 1 positive numbers, one per"):
            loaded.signatures["sample_at_temperature"](
                num_samples=tf.constant(2), temperature=tf.constant([temperature]))


def test_export_model_layout_errors(bernoulli_model, tmp_path):
    for version in ("1", "3", "latest"):
        (tmp_path / "vae" / version).mkdir(parents=True)
    (tmp_path / "vae" / "3" / "saved_model.pb").write_bytes(b"")
    assert export.next_version(str(tmp_path / "vae")) == 4
    assert export.next_version(str(tmp_path / "missing")) == 1
    with pytest.raises(FileExistsError, match="not empty"):
        export.export_model(bernoulli_model, str(tmp_path), "vae", version=3)
    with pytest.raises(ValueError, match="Unknown quantization 'int4'"):
        export.export_model(bernoulli_model, str(tmp_path), "vae", tflite=("int4",))


@pytest.mark.slow
def test_the_version_folder_has_the_umask_mode(bernoulli_model, tmp_path):
    """Not mkdtemp's 0700: a TF Serving running as another user must read it."""
    umask = os.umask(0o027)
    try:
        paths = export.export_model(bernoulli_model, str(tmp_path), "vae", tflite=())
    finally:
        os.umask(umask)
    version = paths["saved_model"]
    assert stat.S_IMODE(os.stat(version).st_mode) == 0o750
    for inner in ("variables", "saved_model.pb", "metadata.json"):
        assert os.stat(os.path.join(version, inner)).st_mode & 0o040, inner


# -- TFLite --------------------------------------------------------------------------------

def test_tflite_decode_matches_keras(bernoulli_model, bernoulli_export):
    interpreter = litert(bernoulli_export["tflite_float32"])
    assert set(interpreter.get_signature_list()) == {"sample", "decode",
                                                     "sample_at_temperature"}
    z = np.random.default_rng(8).normal(size=(5, LATENT_DIM)).astype(np.float32)
    out = interpreter.get_signature_runner("decode")(z=z)
    likelihood = bernoulli_model.decode(z)
    np.testing.assert_allclose(out["images"], likelihood.mean(), atol=1e-5)
    np.testing.assert_allclose(out["logits"], likelihood.distribution.logits_parameter(),
                               atol=1e-5)


def test_tflite_sampler_gives_images_in_range(bernoulli_export):
    sample = litert(bernoulli_export["tflite_float32"]).get_signature_runner("sample")
    out = sample(num_samples=np.array(9, np.int32))
    assert out["images"].shape == (9, *IMAGE_SHAPE)
    assert out["z"].shape == (9, LATENT_DIM)
    assert np.all((out["images"] >= 0) & (out["images"] <= 1))
    assert out["z"].std() > 0.3  # fresh normal draws, not zeros


def test_tflite_samples_a_mixture_prior(mixture_export):
    sample = litert(mixture_export["tflite_float32"]).get_signature_runner("sample")
    mixture_fraction_ok(sample(num_samples=np.array(2000, np.int32))["z"])


# -- a discretized likelihood of 8-bit RGB levels ----------------------------------------

RGB_SHAPE = (4, 4, 3)


@pytest.fixture(scope="module")
def discretized_model():
    keras.utils.set_random_seed(3)
    return tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (16,)),
                     tfvae.MLPDecoder(RGB_SHAPE, (16,), likelihood="discretized_logistic",
                                      likelihood_components=2))


@pytest.fixture(scope="module")
def discretized_export(discretized_model, tmp_path_factory):
    base = tmp_path_factory.mktemp("saved_models")
    return export.export_model(discretized_model, str(base), name="levels")


def level_images(count, seed=0):
    levels = np.random.default_rng(seed).integers(0, 256, (count, *RGB_SHAPE))
    return (levels / 255.0).astype(np.float32)


def test_discretized_signatures_name_the_mixture(discretized_model, discretized_export):
    loaded_model = tf.saved_model.load(discretized_export["saved_model"])
    signatures = loaded_model.signatures
    assert set(signatures["decode"].structured_outputs) == {
        "images", "mixture_logits", "loc", "scale", "coefficients"}
    assert set(signatures["sample"].structured_outputs) == {"images", "draws", "z"}
    assert set(signatures["elbo"].structured_outputs) == {
        "elbo", "rate", "distortion", "bits_per_dim"}
    z = np.random.default_rng(4).normal(size=(5, LATENT_DIM)).astype(np.float32)
    decoded = signatures["decode"](z=tf.constant(z))
    likelihood = discretized_model.decode(z)
    for name, value in likelihood.decoded_parameters().items():
        np.testing.assert_allclose(decoded[name], value, atol=1e-5, err_msg=name)
    assert decoded["loc"].shape == (5, *RGB_SHAPE, 2)
    assert decoded["coefficients"].shape == (5, 4, 4, 3, 2)
    np.testing.assert_allclose(decoded["images"], likelihood.mean(), atol=1e-5)
    images = tf.constant(level_images(6))
    log_prob = signatures["log_prob"](images=images, num_samples=tf.constant(20))
    assert np.all(log_prob["log_prob"].numpy() <= 0)  # log-probabilities of levels
    elbo = signatures["elbo"](images=images)
    np.testing.assert_allclose(elbo["bits_per_dim"],
                               -elbo["elbo"].numpy() / (48 * np.log(2.0)), rtol=1e-5)
    drawn = signatures["sample"](num_samples=tf.constant(7))["draws"].numpy()
    assert drawn.shape == (7, *RGB_SHAPE)
    np.testing.assert_allclose(drawn * 255, np.round(drawn * 255), atol=1e-4)
    with open(discretized_export["metadata"], encoding="utf-8") as f:
        info = json.load(f)
    assert (info["likelihood"], info["likelihood_components"], info["num_dims"]) == (
        "discretized_logistic", 2, 48)
    assert "bits/dim" in info["figures"] and "draws" in info["signatures"]["sample"]
    from tfvae import evaluate
    functions = evaluate.saved_model_functions(loaded_model)
    assert functions["likelihood"] == "discretized_logistic"
    report = evaluate.evaluate(functions, level_images(8), num_samples=5, verbose=0)
    assert report["nll_bits_per_dim"] == pytest.approx(report["nll"] / (48 * np.log(2.0)))


def test_tflite_draws_from_the_discretized_likelihood(discretized_model,
                                                      discretized_export):
    """Built-in ops only (the converter refuses others): Gumbel-max, logistic noise."""
    interpreter = litert(discretized_export["tflite_float32"])
    out = interpreter.get_signature_runner("sample")(num_samples=np.array(300, np.int32))
    draws = out["draws"]
    assert draws.shape == (300, *RGB_SHAPE) and out["images"].shape == draws.shape
    np.testing.assert_allclose(draws * 255, np.round(draws * 255), atol=1e-4)
    assert ((draws >= 0) & (draws <= 1)).all() and draws.std() > 0.05
    # The draws average to the mean image of their codes (300 draws: within 0.05).
    keras_mean = discretized_model.decode(out["z"]).mean().numpy()
    np.testing.assert_allclose(out["images"], keras_mean, atol=1e-5)
    assert abs(float(draws.mean() - keras_mean.mean())) < 0.05
    z = np.random.default_rng(5).normal(size=(3, LATENT_DIM)).astype(np.float32)
    decoded = interpreter.get_signature_runner("decode")(z=z)
    np.testing.assert_allclose(decoded["scale"],
                               discretized_model.decode(z).decoded_parameters()["scale"],
                               rtol=1e-5)


# -- the command-line tools ----------------------------------------------------------------

def run_tool(*args):
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=QUIET_ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def read_png(path):
    return tf.io.decode_png(tf.io.read_file(str(path))).numpy()


@pytest.mark.slow
def test_export_and_sample_tools(bernoulli_model, bernoulli_export, tmp_path):
    """.keras -> SavedModel + float16 and int8 TFLite -> PNG grids."""
    checkpoint = str(tmp_path / "model.keras")
    bernoulli_model.save(checkpoint)
    run_tool("tools.export", f"--checkpoint={checkpoint}", f"--base_dir={tmp_path}",
             "--name=cli", "--tflite=float16,int8")
    version_dir = tmp_path / "cli" / "1"
    z = np.random.default_rng(9).normal(size=(5, LATENT_DIM)).astype(np.float32)
    keras_images = bernoulli_model.decode(z).mean()
    float32_size = os.path.getsize(bernoulli_export["tflite_float32"])
    for quantization, atol in (("float16", 1e-2), ("int8", 5e-2)):
        path = str(version_dir / f"cli_{quantization}.tflite")
        assert os.path.getsize(path) < float32_size  # tiny model: headers dominate
        out = litert(path).get_signature_runner("decode")(z=z)
        np.testing.assert_allclose(out["images"], keras_images, atol=atol)

    np.save(tmp_path / "test.npy", (binary_images(10) * 255).astype(np.uint8))
    run_tool("tools.sample", str(version_dir), "--num_samples=10",
             f"--output={tmp_path / 'samples.png'}", f"--images={tmp_path / 'test.npy'}",
             f"--reconstructions={tmp_path / 'reconstructions.png'}")
    assert read_png(tmp_path / "samples.png").shape == (3 * 8, 4 * 8, 1)  # 10 in 4 columns
    pairs = read_png(tmp_path / "reconstructions.png")
    assert pairs.shape == (2 * 2 * 8, 8 * 8, 1)  # 2 rows of 8 inputs, each + its recons
    np.testing.assert_array_equal(pairs[:8, :8, 0], binary_images(10)[0, ..., 0] * 255)

    stdout = run_tool("tools.sample", str(version_dir / "cli_int8.tflite"),
                      "--num_samples=6", f"--output={tmp_path / 'tflite.png'}",
                      "--benchmark_runs=3")
    assert read_png(tmp_path / "tflite.png").shape == (2 * 8, 3 * 8, 1)
    assert "us per sample" in stdout
    run_tool("tools.sample", str(version_dir / "cli_int8.tflite"), "--num_samples=4",
             "--columns=4", "--temperature=1e-6", f"--output={tmp_path / 'cold.png'}")
    cold = read_png(tmp_path / "cold.png").astype(int)  # four draws of p(z)'s mean
    for i in (1, 2, 3):  # one image, to a grey level (these sit near 0.5: 127 or 128)
        assert np.abs(cold[:8, :8] - cold[:8, 8 * i:8 * i + 8]).max() <= 1
