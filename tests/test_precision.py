"""Every family trains under mixed precision; what it reports stays float32.

Under `mixed_bfloat16` and `mixed_float16` the layers compute in 16 bits while the
variables, the distributions, the log-weights and the loss stay float32 (the casts
are in `distributions.py` and `conditioning.concat`). A model's weights give the same
log p(x) evaluated in 16 bits as in float32, within the tolerance measured below.
"""

import numpy as np
import pytest
import tensorflow as tf

import keras
from tfvae import builders

IMAGE = (8, 8, 1)
SMALL = dict(latent_dim=3, encoder_hidden_units=(16,), decoder_hidden_units=(16,),
             top_down_hidden_units=(8,), encoder_filters=(4,), decoder_filters=(4,))
FAMILIES = {
    "mlp": {},
    "conv": {"encoder": "conv", "decoder": "conv"},
    "hierarchy_vampprior": {"top_down_latent_dims": (4,), "prior": "vampprior",
                            "prior_components": 3},
    "iaf": {"posterior": "iaf", "flow_hidden_units": 8, "top_down_latent_dims": (2,)},
    "conditional": {"num_classes": 3, "prior": "conditional"},
    "spatial": {"encoder": "resnet", "decoder": "resnet", "latent_groups": "2x1,4x1",
                "latent_channels": 2, "cell_channels": 8, "free_bits": 0.1},
    "iwae_dreg": {"objective": "iwae", "num_samples": 3, "gradient_estimator": "dreg"},
    "wake_sleep": {"objective": "wake_sleep"},
    "score_function": {"gradient_estimator": "score_function", "num_samples": 2},
    "infovae": {"info_alpha": 0.5, "info_lambda": 10.0, "kl_warmup_steps": 3},
}


@pytest.fixture
def policy(request):
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(request.param)
    yield request.param
    keras.mixed_precision.set_global_policy(previous)


def inputs(count, options, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.random((count, *IMAGE)) < 0.3).astype("float32")
    if options.get("num_classes"):
        return {"images": images, "labels": rng.integers(0, 3, count).astype("int32")}
    return images


def build(options):
    keras.utils.set_random_seed(0)
    return builders.build_model(IMAGE, **{**SMALL, **options})


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.slow
def test_every_family_trains_in_16_bits_and_reports_float32(family, policy):
    options = FAMILIES[family]
    model = build(options)
    assert model.encoder.compute_dtype == policy.split("_")[1]
    model.compile(optimizer=builders.build_optimizer("adam", 1e-3, skip_threshold=1e6),
                  jit_compile=False)
    history = model.fit(inputs(16, options), batch_size=8, epochs=2, verbose=0).history
    assert np.all(np.isfinite(history["loss"])) and np.isfinite(history["elbo"][-1])
    log_w = model.log_importance_weights(inputs(4, options, seed=1), 3)
    assert log_w.dtype == tf.float32 and np.all(np.isfinite(log_w))


# Measured (2026-12-05): |log p(x) in 16 bits - in float32| at most 0.0078 (hierarchy)
# and 0.010 nats (spatial) in bfloat16, 0.0024 and 0.0013 in float16, at about -44 nats
# for these small models; the tolerances leave 10x.
TOLERANCE = {"mixed_bfloat16": 0.1, "mixed_float16": 0.02}


@pytest.mark.parametrize("family", ["hierarchy_vampprior", "spatial"])
@pytest.mark.parametrize("precision", sorted(TOLERANCE))
@pytest.mark.slow
def test_16_bit_weights_give_the_float32_log_px_within_tolerance(family, precision):
    options = FAMILIES[family]
    keras.mixed_precision.set_global_policy(precision)
    try:
        trained = build(options)
        trained.compile(optimizer="adam", jit_compile=False)
        trained.fit(inputs(32, options), batch_size=8, epochs=2, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    copy = build(options)
    copy.set_weights(trained.get_weights())
    x, seed = inputs(8, options, seed=2), tf.constant([3, 4])
    low = trained.log_importance_weights(x, 200, seed=seed).numpy()
    full = copy.log_importance_weights(x, 200, seed=seed).numpy()
    log_px = [tf.reduce_logsumexp(w, 0).numpy() - np.log(200) for w in (low, full)]
    assert np.all(np.abs(log_px[0] - log_px[1]) < TOLERANCE[precision])


@pytest.mark.parametrize("threshold, skipped", [(1e-3, 4), (1e6, 0)])
@pytest.mark.slow
def test_skipping_works_under_a_mirrored_strategy(threshold, skipped):
    """The skip decision is taken across replicas (a cond around the optimizer's
    merge_call would fail in a replica context)."""
    with tf.distribute.MirroredStrategy().scope():
        model = build(FAMILIES["spatial"])
        optimizer = builders.build_optimizer("adam", 1e-3, skip_threshold=threshold)
        model.compile(optimizer=optimizer, jit_compile=False)
    model.fit(inputs(32, {}), batch_size=8, epochs=1, verbose=0)
    assert int(optimizer.skipped_updates.numpy()) == skipped
    assert int(optimizer.iterations.numpy()) == 4 - skipped
