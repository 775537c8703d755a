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
    return encoded
