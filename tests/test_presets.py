"""Tests of tfvae.presets: a trained model by name or path (`VAE.from_preset`).

A fake saved_models tree in a temporary folder: model `tiny` has versions 1 (a .keras
file only), 3 (a whole export: SavedModel and .keras) and 4 (a SavedModel without a
.keras file); `baseline` has only a version without one.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import tfvae
from tfvae import checks, export, presets, rundir, user_files
from tools.samplers import load_sampler
from tiny_models import tiny_vae

IMAGE_SHAPE = (8, 8, 1)
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A .keras file written by tfvae 0.1.0 before the one-core change (2026-12-01), which
# this version cannot read (tests/data/tfvae_0.1.0/make.py; tests/test_upgrade.py).
OLD_FILE = os.path.join(REPO, "tests", "data", "tfvae_0.1.0", "mlp.keras")


def tiny_model(seed):
    return tiny_vae(IMAGE_SHAPE, 3, seed=seed)


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("presets")
    base = root / "saved_models"
    models = {"v1": tiny_model(1), "v3": tiny_model(3)}
    (base / "tiny" / "1").mkdir(parents=True)
    export.save_keras(models["v1"], str(base / "tiny" / "1" / "tiny.keras"))
    export.export_model(models["v3"], str(base), "tiny", version=3, tflite=())
    for fake in ("tiny/4", "baseline/1"):
        (base / fake).mkdir(parents=True)
        (base / fake / "saved_model.pb").write_bytes(b"")
    (root / "run").mkdir()
    models["v1"].save(str(root / "run" / "model.keras"))
    return {"root": root, "base": str(base), "models": models}


def same_weights(model, other):
    return all(np.array_equal(a, b) for a, b in zip(model.get_weights(),
                                                     other.get_weights()))


def test_a_name_gives_the_highest_version_with_a_keras_file(tree):
    model = tfvae.VAE.from_preset("tiny", saved_models=tree["base"])
    assert same_weights(model, tree["models"]["v3"])
    assert not same_weights(model, tree["models"]["v1"])
    assert presets.list_presets(tree["base"]) == ["tiny"]
    newest = os.path.join(tree["base"], "tiny", "3")
    assert presets.resolve("tiny", tree["base"]) == newest


@pytest.mark.parametrize("form, version", [
    ("tiny/3", "v3"), ("tiny/1", "v1"), ("tiny", "v3"), ("tiny/1/tiny.keras", "v1"),
    ("../run", "v1"), ("../run/model.keras", "v1")])
def test_paths(tree, form, version):
    """A version folder, a model folder, a .keras file and a run directory."""
    model = tfvae.VAE.from_preset(os.path.join(tree["base"], form))
    assert same_weights(model, tree["models"][version])


def test_the_environment_variable_names_the_folder(tree, monkeypatch, tmp_path):
    monkeypatch.setenv(presets.ENV_VAR, tree["base"])
    monkeypatch.chdir(tmp_path)  # no ./saved_models here
    assert presets.search_path()[0] == tree["base"]
    assert same_weights(tfvae.VAE.from_preset("tiny"), tree["models"]["v3"])
    # The tools' resolver takes names too: the SavedModel of version 3 ...
    location = rundir.locate_model("tiny")
    assert (location["kind"], location["metadata"]["version"]) == ("saved_model", 3)
    assert load_sampler("tiny").latent_dim == 3
    # ... and its .keras file for the tools that read one.
    assert rundir.keras_path("tiny") == os.path.join(tree["base"], "tiny", "3",
                                                     "tiny.keras")


def test_an_unknown_name_lists_the_presets(tree):
    with pytest.raises(checks.InputError, match=(
            r"^nope is neither a file nor a preset; presets: tiny \(looked in: .*"
            r"saved_models\)\.$")):
        tfvae.VAE.from_preset("nope", saved_models=tree["base"])


def test_a_model_without_a_keras_file_is_no_preset(tree):
    with pytest.raises(checks.InputError, match=(
            r"^baseline has no \.keras file in any version of .*baseline, so it is no "
            r"preset; .*tools\.sample")):
        tfvae.VAE.from_preset("baseline", saved_models=tree["base"])
    with pytest.raises(checks.InputError, match="is a SavedModel without a .keras file"):
        tfvae.VAE.from_preset(os.path.join(tree["base"], "tiny", "4"))


def test_a_missing_path_is_named(tree):
    missing = os.path.join(str(tree["root"]), "none.keras")
    assert presets.resolve(missing) == missing
    with pytest.raises(checks.InputError, match="none.keras does not exist"):
        tfvae.VAE.from_preset(missing)


def test_a_file_of_another_version_names_both_versions():
    assert user_files.keras_writer(OLD_FILE) == (
        "tfvae before 0.2.0 (no version recorded; saved 2026-12-05@20:15:47)")
    with pytest.raises(checks.InputError, match=(
            rf"cannot be read as a tfvae \.keras model by tfvae {tfvae.__version__}: it "
            r"was written by tfvae before 0\.2\.0 \(no version recorded; saved "
            r"2026-12-05@20:15:47\)")):
        tfvae.VAE.from_preset(OLD_FILE)


def test_the_shipped_presets_are_found():
    """The checkout's saved_models/ (not present in a `pip install .`)."""
    assert {"hvae_binarized_mnist", "cvae_fashion_mnist"} <= set(
        presets.list_presets(presets.CHECKOUT))


@pytest.mark.slow
def test_a_tool_takes_a_name(tree, tmp_path):
    """tools.sample samples preset `tiny` (its version 3) from the command line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO,
           presets.ENV_VAR: tree["base"]}
    out = tmp_path / "samples.png"
    done = subprocess.run([sys.executable, "-m", "tools.sample", "tiny",
                           f"--output={out}", "--num_samples=4"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.stat().st_size > 0
