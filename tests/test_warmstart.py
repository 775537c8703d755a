"""Warm starts (`tfvae.warmstart`, the trainer's --init_from): weights copied by path
and shape, the report, the refusals, and the trainer end to end on mock MNIST."""

import json

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

from test_train import NUM_EXAMPLES, TINY, _argv, _fails, _Kill, _run
from tfvae import builders, checks, train, warmstart

SMALL = dict(encoder_hidden_units=[8], decoder_hidden_units=[8], latent_dim=2)
IMAGE_SHAPE = (4, 4, 1)


def _vae(image_shape=IMAGE_SHAPE, **options):
    return builders.build_model(image_shape, **{**SMALL, **options})


def _images(count=3):
    images = np.random.default_rng(0).random((count, *IMAGE_SHAPE)) > 0.5
    return images.astype("float32")


def _values(model):
    return {path: v.numpy() for path, v in warmstart.weights_by_path(model).items()}


def _dense_net(extra):
    """x -> hidden -> out; `extra` adds a zero-initialised residual layer after hidden."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden")(inputs)
    if extra:
        hidden = hidden + keras.layers.Dense(4, kernel_initializer="zeros",
                                             name="extra")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden), name="net")


# -- copy_weights ---------------------------------------------------------------------

def test_an_added_zero_initialised_layer_leaves_the_source_outputs_unchanged():
    source, target = _dense_net(extra=False), _dense_net(extra=True)
    report = warmstart.copy_weights(source, target)
    assert sorted(report.copied) == ["hidden/bias", "hidden/kernel", "out/bias",
                                     "out/kernel"]
    assert report.new == ["extra/kernel", "extra/bias"] and not report.skipped
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_array_equal(target(x), source(x))


def test_a_vae_with_a_new_prior_keeps_the_source_encoder_and_decoder_exactly():
    source, target = _vae(), _vae(prior="mixture", prior_components=3)
    report = warmstart.copy_weights(source, target)
    assert report.new and all(path.startswith("prior/") for path in report.new)
    assert not report.skipped and not report.unused
    assert len(report.copied) + len(report.new) == report.weights == len(target.weights)
    source_values = _values(source)
    for path, value in _values(target).items():
        if path in report.copied:
            np.testing.assert_array_equal(value, source_values[path])
    x = _images()
    z = np.random.default_rng(1).normal(size=(2, 3, 2)).astype("float32")
    np.testing.assert_array_equal(target.log_likelihood(x, z),
                                  source.log_likelihood(x, z))
    got, want = target.encode(x), source.encode(x)
    np.testing.assert_array_equal(got.mean(), want.mean())
    np.testing.assert_array_equal(got.stddev(), want.stddev())


def test_weights_of_another_shape_are_skipped_and_keep_their_initialisation():
    source, target = _vae(), _vae(latent_dim=3)
    before = _values(target)
    report = warmstart.copy_weights(source, target)
    assert report.skipped == {"encoder/head/posterior_params/kernel": ((8, 4), (8, 6)),
                              "encoder/head/posterior_params/bias": ((4,), (6,)),
                              "decoder/hidden_0/kernel": ((2, 8), (3, 8))}
    after, source_values = _values(target), _values(source)
    for path in report.skipped:
        np.testing.assert_array_equal(after[path], before[path])
    for path in report.copied:
        np.testing.assert_array_equal(after[path], source_values[path])
    assert "3 skipped for shape: encoder/head/posterior_params/kernel 8x4 -> 8x6, " \
        "encoder/head/posterior_params/bias 4 -> 6, decoder/hidden_0/kernel 2x8 -> 3x8" \
        in report.summary()


def test_models_that_share_no_weight_are_refused_and_left_unchanged():
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="elsewhere")])
    target = _dense_net(extra=False)
    before = _values(target)
    with pytest.raises(warmstart.NoMatchingWeights, match="share no layer names"):
        warmstart.copy_weights(other, target)
    # Other layer sizes, and a likelihood with other parameters.
    with pytest.raises(warmstart.NoMatchingWeights,
                       match=r"the 8 that share a path all differ in shape \(e.g. "
                             "encoder/head/posterior_params/kernel 8x8 -> 5x4;"):
        warmstart.copy_weights(_vae(latent_dim=4),
                               _vae(encoder_hidden_units=[5], decoder_hidden_units=[7],
                                    likelihood="gaussian"))
    for path, value in _values(target).items():
        np.testing.assert_array_equal(value, before[path])


def test_float32_weights_go_into_mixed_precision_and_bfloat16_models():
    source = _dense_net(extra=False)
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(4, name="hidden", dtype="bfloat16")(inputs)
    target = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden), name="net")
    warmstart.copy_weights(source, target)
    assert target.get_layer("hidden").kernel.dtype == "bfloat16"
    np.testing.assert_allclose(
        target.get_layer("hidden").kernel.numpy().astype("float32"),
        source.get_layer("hidden").kernel.numpy(), rtol=1e-2)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        mixed = _vae()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    vae = _vae()
    assert len(warmstart.copy_weights(vae, mixed).copied) == len(vae.weights)
    want = _values(vae)
    for path, value in _values(mixed).items():
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value, want[path])


def test_the_summary_names_a_few_weights_and_counts_the_rest():
    report = warmstart.WarmStartReport("a.keras", 9, copied=["c"] * 3,
                                       new=[f"n{i}" for i in range(6)], unused=["u"])
    assert report.summary() == (
        "init_from a.keras: copied 3 of 9 weights (6 new, left at their initialisation: "
        "n0, n1, n2 and 3 more; 0 skipped for shape; 1 of the source's unused: u).")


# -- from a file ------------------------------------------------------------------------

def test_a_run_directory_gives_its_best_checkpoint_else_its_final_model(tmp_path):
    vae = _vae()
    vae.save(tmp_path / "model.keras")
    assert warmstart.source_file(str(tmp_path)) == str(tmp_path / "model.keras")
    vae.save(tmp_path / "best.keras")
    assert warmstart.source_file(str(tmp_path)) == str(tmp_path / "best.keras")
    target = _vae(prior="mixture", prior_components=3)
    report = warmstart.warm_start(target, str(tmp_path))
    assert report.source == str(tmp_path / "best.keras")


def _bad_sources(tmp_path):
    _vae(image_shape=(8, 8, 1)).save(tmp_path / "other_images.keras")
    (tmp_path / "cut.keras").write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "notes.txt").write_text("not a model")
    (tmp_path / "empty_run").mkdir()


BAD_SOURCES = [
    ("missing.keras", "missing.keras does not exist."),
    ("notes.txt", "notes.txt is neither a .keras file nor a run directory."),
    ("empty_run", "empty_run is a directory without best.keras or model.keras"),
    ("cut.keras", "cut.keras cannot be read as a tfvae .keras model"),
    ("other_images.keras", "other_images.keras models images of shape 8x8x1, this "
     "model 4x4x1; a warm start needs the same images."),
]


@pytest.mark.parametrize("name, expected", BAD_SOURCES)
def test_a_bad_source_is_one_input_error(name, expected, tmp_path):
    _bad_sources(tmp_path)
    with pytest.raises(checks.InputError) as error:
        warmstart.warm_start(_vae(), str(tmp_path / name))
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_a_likelihood_change_is_noted_and_its_head_starts_fresh(tmp_path):
    _vae().save(tmp_path / "bernoulli.keras")
    report = warmstart.warm_start(_vae(likelihood="gaussian"),
                                  str(tmp_path / "bernoulli.keras"))
    assert "decoder/likelihood_params/kernel" in report.skipped
    assert report.summary().endswith("; the likelihood changes from bernoulli to "
                                     "gaussian).")


# -- the trainer ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """One epoch of the tiny model; its run directory."""
    output_dir = tmp_path_factory.mktemp("base") / "run"
    _run(*_argv(**{**TINY, "epochs": 1})[1:], f"--output_dir={output_dir}")
    return output_dir


@pytest.mark.slow
def test_a_run_with_an_extra_layer_starts_from_another_run(base_run, tmp_path, capsys):
    output_dir = tmp_path / "deeper"
    # Two steps at a negligible learning rate: the saved model is the one it started
    # from; with the EMA, whose average must start from the copied weights too.
    metrics = _run(*_argv(**{**TINY, "decoder_hidden_units": [16, 16], "epochs": 1,
                             "steps_per_epoch": 2, "learning_rate": 1e-9,
                             "use_ema": True})[1:],
                   f"--init_from={base_run}", f"--output_dir={output_dir}")
    best = str(base_run / "best.keras")
    summary = [line for line in capsys.readouterr().out.splitlines()
               if line.startswith("init_from")]
    assert summary == [
        f"init_from {best}: copied 8 of 10 weights (2 new, left at their initialisation: "
        "decoder/hidden_1/kernel, decoder/hidden_1/bias; 0 skipped for shape; 0 of the "
        "source's unused)."]
    with open(output_dir / "config.json") as f:
        assert json.load(f)["init_from"] == str(base_run)
    with open(output_dir / "warm_start.json") as f:
        recorded = json.load(f)
    assert recorded == metrics["warm_start"]
    assert recorded["source"] == best and recorded["copied"] == 8
    assert recorded["new"] == ["decoder/hidden_1/kernel", "decoder/hidden_1/bias"]
    start = _values(keras.saving.load_model(best))
    trained = _values(keras.saving.load_model(output_dir / "model.keras"))
    for path, value in start.items():
        np.testing.assert_allclose(trained[path], value, atol=1e-6)


@pytest.mark.slow
def test_a_resumed_run_ignores_init_from(base_run, tmp_path, capsys):
    options = {**TINY, "epochs": 2, "backup_save_freq": 2, "prior": "mixture",
               "init_from": str(base_run)}
    output_dir = tmp_path / "run"
    with tfds.testing.mock_data(num_examples=NUM_EXAMPLES), \
            pytest.raises(KeyboardInterrupt):
        train.train_and_evaluate(str(output_dir), callbacks=[_Kill(1, 2)], **options)
    assert "init_from" in capsys.readouterr().out
    metrics = _run(*_argv(**options)[1:], f"--output_dir={output_dir}")
    out = capsys.readouterr().out
    assert (f"--init_from={base_run} is ignored: the run resumes from its backup in "
            f"{output_dir / 'backup'}.") in out
    assert "init_from " + str(base_run) not in out  # no new summary line
    assert metrics["resumed_from"] == {"epoch": 1, "step": 4}
    assert metrics["warm_start"]["source"] == str(base_run / "best.keras")


@pytest.mark.parametrize("name, expected", BAD_SOURCES[:3])
def test_a_bad_init_from_fails_in_one_line(name, expected, tmp_path):
    _bad_sources(tmp_path)
    message = _fails(*_argv(**TINY)[1:], f"--init_from={tmp_path / name}",
                     f"--output_dir={tmp_path / 'run'}")
    assert message.startswith("tfvae.train: error: --init_from: ") and expected in message


def test_init_from_a_model_that_shares_no_weight_fails_in_one_line(tmp_path):
    source = _vae(image_shape=(28, 28, 1), encoder="conv", decoder="conv",
                  encoder_filters=[4], decoder_filters=[4], latent_dim=5)
    source.save(tmp_path / "conv.keras")
    message = _fails(*_argv(**TINY)[1:], f"--init_from={tmp_path / 'conv.keras'}",
                     f"--output_dir={tmp_path / 'run'}")
    assert "no weight of" in message and "likely" in message
