"""One check of an exported hierarchy against its model, shared by the tests of
vector (test_hierarchy.py) and spatial (test_blocks.py) hierarchies."""

import numpy as np
import tensorflow as tf


def check_export_parity(model, paths, images):
    """The SavedModel's signatures and the float32 TFLite `sample` and `decode` agree
    with `model` on `images` [N, H, W, C] and on random codes."""
    from ai_edge_litert.interpreter import Interpreter

    loaded = tf.saved_model.load(paths["saved_model"]).signatures
    x, count, dims = tf.constant(images), len(images), model.latent_dim
    encoded = loaded["encode"](images=x)
    np.testing.assert_allclose(encoded["code"], model.code(images), atol=1e-5)
    from tfvae import distributions
    discretized = distributions.is_discretized(model.decoder.likelihood)
    layers = {f"rate_{l}" for l in range(1, model.num_layers + 1)}
    bits = {"bits_per_dim"} if discretized else set()
    assert {"elbo", "rate", "distortion", *layers, *bits} == set(loaded["elbo"](images=x))
    z = np.random.default_rng(0).normal(size=(count, dims)).astype("float32")
    np.testing.assert_allclose(loaded["decode"](z=tf.constant(z))["images"],
                               model.decode(z).mean(), atol=1e-5)
    np.testing.assert_allclose(loaded["reconstruct"](images=x)["images"],
                               model.reconstruct(images), atol=1e-5)
    log_p = loaded["log_prob"](images=x, num_samples=tf.constant(50))
    assert np.all(np.isfinite(log_p["log_prob"]))
    if discretized:  # a log-probability of the levels
        assert np.all(log_p["log_prob"].numpy() <= 0)
    sampled = loaded["sample"](num_samples=tf.constant(6))
    assert sampled["z"].shape == (6, dims)
    assert sampled["images"].shape == (6, *model.image_shape)
    runner = Interpreter(model_path=paths["tflite_float32"]).get_signature_runner("sample")
    out = runner(num_samples=np.array(4, np.int32))
    assert out["images"].shape == (4, *model.image_shape) and np.all(np.isfinite(out["z"]))
    decoder = Interpreter(model_path=paths["tflite_float32"]).get_signature_runner("decode")
    np.testing.assert_allclose(decoder(z=z)["images"], model.decode(z).mean(), atol=1e-5)
    check_cooled_samples(model, loaded, paths)
    from tools.samplers import load_sampler
    assert load_sampler(paths["tflite_float32"]).image_shape == tuple(model.image_shape)
    declared = decoder.get_output_details()["images"]["shape_signature"][1:]
    assert tuple(declared) == tuple(model.image_shape)  # not -1 x -1 for conv maps
    return encoded


def check_cooled_samples(model, loaded, paths):
    """`sample_at_temperature` (SavedModel and float32 TFLite), known answers: at t
    near 0 every layer draws its prior's mean, the codes of `VAE.sample` at that t;
    with only the top layer cooled, the top codes agree and the others vary."""
    from ai_edge_litert.interpreter import Interpreter

    _, means = model.sample(1, return_codes=True, temperature=1e-6)
    runner = Interpreter(model_path=paths["tflite_float32"]).get_signature_runner(
        "sample_at_temperature")
    cold = np.full([model.num_layers], 1e-6, np.float32)
    for sample in (loaded["sample_at_temperature"], runner):
        z = np.asarray(sample(num_samples=np.array(3, np.int32), temperature=cold)["z"])
        np.testing.assert_allclose(z, np.repeat(means, 3, axis=0), atol=1e-4)
    top = model.latent_dims[0]
    cold_top = np.array([1e-6] + [1.0] * (model.num_layers - 1), np.float32)
    z = loaded["sample_at_temperature"](num_samples=tf.constant(3),
                                        temperature=tf.constant(cold_top))["z"].numpy()
    np.testing.assert_allclose(z[:, :top], np.repeat(means[:, :top], 3, axis=0), atol=1e-4)
    if model.num_layers > 1:
        assert np.all(z[:, top:].std(axis=0) > 0)
