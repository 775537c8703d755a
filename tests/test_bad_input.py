"""Every bad input gets one clear line, every run ends whole (issue 15).

A table of bad inputs across the command lines (`tfvae.train` and every tool), the
SavedModel and the TFLite file; each case asserts the exit code (or the exception),
no traceback, and the words of the message. One tiny exported model (8 x 8 images,
3 latents) serves all cases. Each tool's cases run in one process (`cli_driver.py`)
so that TensorFlow is imported once per tool. Ctrl-C: one wrapper
(`cli.interruptible`) on every tool's main, tested once through a real SIGINT.
"""

import collections
import json
import os
import ast
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import builders, checks, cli, export, train
from pattern_data import binary_images

IMAGE_SHAPE = (8, 8, 1)
LATENT_DIM = 3
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
TINY_RUN = ["--dataset=mnist", "--binarization=dynamic", "--validation_split=test",
            "--encoder_hidden_units=16", "--decoder_hidden_units=16", "--latent_dim=2",
            "--batch_size=16", "--nojit_compile", "--nolog_images", "--verbose=0"]
NO_FILES = collections.defaultdict(str)  # to list a table's case names
# The modules of tools/ that the tools share, not command lines of their own.
NOT_TOOLS = ("__init__.py", "common.py", "kserve_server.py", "samplers.py",
             "tf_serving.py")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The tiny model as .keras, SavedModel and .tflite, and the bad files."""
    root = tmp_path_factory.mktemp("bad_input")
    keras.utils.set_random_seed(3)
    model = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (16,)),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (16,)))
    gaussian = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (8,)),
                         tfvae.MLPDecoder(IMAGE_SHAPE, (8,), likelihood="gaussian"))
    # A SavedModel without a .keras file: the tools that need one refuse it.
    paths = export.export_model(model, str(root / "exports"), "tiny", with_keras=False)
    paths["keras"] = str(root / "model.keras")
    model.save(paths["keras"])
    paths["gaussian"] = str(root / "gaussian.keras")
    gaussian.save(paths["gaussian"])
    for name, options in (("conditional", dict(num_classes=3)),
                          ("hierarchy", dict(top_down_latent_dims=(2,),
                                             top_down_hidden_units=(8,)))):
        paths[name] = str(root / f"{name}.keras")
        builders.build_model(IMAGE_SHAPE, latent_dim=LATENT_DIM,
                             encoder_hidden_units=(8,), decoder_hidden_units=(8,),
                             **options).save(paths[name])
    paths["plain_keras"] = str(root / "plain.keras")
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(
        paths["plain_keras"])
    arrays = {
        "good": binary_images(6),
        "one_image": binary_images(1),
        "wrong_shape": np.zeros((4, 7, 8, 1), np.float32),
        "nan": np.where(np.arange(6)[:, None, None, None] == 1, np.nan,
                        binary_images(6)).astype(np.float32),
        "grey": np.full((4, *IMAGE_SHAPE), 0.4, np.float32),
        "above_one": np.full((4, *IMAGE_SHAPE), 2.0, np.float32),
        "big_integers": np.full((4, *IMAGE_SHAPE), 300, np.int32),
        "empty": np.zeros((0, *IMAGE_SHAPE), np.float32),
        "strings": np.array(["a", "b"]),
        "codes": np.random.default_rng(0).normal(size=(4, LATENT_DIM)),  # float64
        "wide_codes": np.zeros((2, LATENT_DIM + 2), np.float32),
        "one_code": np.zeros(LATENT_DIM, np.float32),
        "nan_codes": np.where(np.arange(3)[:, None] == 1, np.nan,
                              np.zeros((3, LATENT_DIM))).astype(np.float32),
        "two_labels": np.arange(2),
        "six_labels": np.arange(6) % 3,
    }
    for name, array in arrays.items():
        paths[name] = str(root / f"{name}.npy")
        np.save(paths[name], array)
    paths["cut_npy"] = _cut_copy(paths["good"], root / "cut.npy")
    paths["not_npy"] = str(root / "not.npy")
    with open(paths["not_npy"], "w") as f:
        f.write("pixel,value\n0,1\n")
    paths["cut_keras"] = _cut_copy(paths["keras"], root / "cut.keras")
    paths["cut_tflite"] = _cut_copy(paths["tflite_float32"], root / "cut.tflite")
    paths["cut_saved_model"] = str(root / "cut_saved_model")
    shutil.copytree(paths["saved_model"], paths["cut_saved_model"])
    _cut_copy(os.path.join(paths["saved_model"], "saved_model.pb"),
              os.path.join(paths["cut_saved_model"], "saved_model.pb"))
    paths["bad_json"] = str(root / "bad.json")
    with open(paths["bad_json"], "w") as f:
        f.write("{'test_elbo': -90}")
    for name, text in (("typo_cfg", "--batch_sise=3\n"),
                       ("list_cfg", "--encoder_hidden_units=a,b\n")):
        paths[name] = str(root / f"{name}.cfg")
        with open(paths[name], "w") as f:
            f.write(text)
    paths["a_file"] = str(root / "a_file")
    with open(paths["a_file"], "w") as f:
        f.write("not a directory")
    paths["curve"] = str(root / "curve.csv")  # a run's Figure 2 points, ELBO -150 to -130
    with open(paths["curve"], "w") as f:
        f.write("examples,seconds,train_elbo,test_elbo\n1000,1,-150,-151\n10000,9,-130,-131\n")
    paths["root"] = str(root)
    return paths


def _cut_copy(source, target):
    with open(source, "rb") as f:
        content = f.read()
    with open(target, "wb") as f:
        f.write(content[:len(content) // 2])
    return str(target)


def run_tool(tool, cases, root):
    """Runs `tool` on each case's arguments ({name: [args]}); {name: outcome}."""
    cases_path = os.path.join(root, f"{tool}.cases.json")
    results_path = os.path.join(root, f"{tool}.results.json")
    with open(cases_path, "w") as f:
        json.dump(list(cases.values()), f)
    process = subprocess.run(
        [sys.executable, os.path.join(REPO, "tests", "cli_driver.py"), tool, cases_path,
         results_path], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    with open(results_path) as f:
        return dict(zip(cases, json.load(f)))


def one_line_error(outcome, program, *words):
    """The case failed with status 1 and the single line 'program: error: ...'."""
    assert outcome["code"] == 1, outcome
    assert "Traceback" not in outcome["stderr"], outcome["stderr"][-3000:]
    line = outcome["stderr"].strip().splitlines()[-1]
    assert line.startswith(f"{program}: error: "), outcome["stderr"][-3000:]
    for word in words:
        assert word in line, (word, line)


# -- tools.evaluate -------------------------------------------------------------------------

EVALUATE = ["--num_samples=5", "--verbose=0", "--nojit_compile"]
GREY = ("has grey levels", "Bernoulli", "cross-entropy", "--allow_grey_levels")


def evaluate_cases(f):
    npy = {name: f"--images_npy={f[name]}" for name in (
        "good", "wrong_shape", "nan", "grey", "above_one", "big_integers", "empty",
        "strings", "cut_npy", "not_npy")}
    keras_model, saved = f["keras"], f["saved_model"]
    return {
        # case: (arguments, expected words of the error line, or None for success)
        "keras wrong shape": ([keras_model, npy["wrong_shape"]], (
            "has shape (4, 7, 8, 1)", "images must have shape [batch, 8, 8, 1]")),
        "saved wrong shape": ([saved, npy["wrong_shape"]], (
            "has shape (4, 7, 8, 1)", "images must have shape [batch, 8, 8, 1]")),
        "negative k": ([keras_model, npy["good"], "--num_samples=-1"], (
            "--num_samples=-1", "is not a non-negative integer")),
        "keras NaN": ([keras_model, npy["nan"]], ("has NaN (first in image 1)",)),
        "saved NaN": ([saved, npy["nan"]], ("has NaN (first in image 1)",)),
        "keras grey": ([keras_model, npy["grey"]], GREY),
        "saved grey": ([saved, npy["grey"]], GREY),
        "keras grey allowed": ([keras_model, npy["grey"], "--allow_grey_levels"], None),
        "gaussian grey": ([f["gaussian"], npy["grey"]], None),
        "above one": ([keras_model, npy["above_one"]], (
            "pixel values in [2.0, 2.0]", "divide 0-255 images by 255")),
        "integers above 255": ([keras_model, npy["big_integers"]], (
            "integer values in [300, 300]",)),
        "no images": ([keras_model, npy["empty"]], ("holds no images",)),
        "strings": ([keras_model, npy["strings"]], ("has dtype <U1",)),
        "cut npy": ([keras_model, npy["cut_npy"]], ("cannot be read as a .npy",)),
        "csv as npy": ([keras_model, npy["not_npy"]], ("cannot be read as a .npy",)),
        "missing npy": ([keras_model, f"--images_npy={f['root']}/none.npy"], (
            "none.npy does not exist",)),
        "cut keras": ([f["cut_keras"], npy["good"]], (
            "cannot be read as a tfvae .keras model",)),
        "cut saved model": ([f["cut_saved_model"], npy["good"]], (
            "cannot be loaded as a SavedModel",)),
        "missing model": ([f"{f['root']}/none.keras", npy["good"]], (
            "is not a .keras file",)),
        "output under a file": ([keras_model, npy["good"],
                                 f"--output={f['a_file']}/report.json"], ("a_file",)),
        "no model": ([npy["good"]], ("usage: python -m tools.evaluate MODEL",)),
    }


def tool_outcomes(tool, cases, root, extra=()):
    """{case: (outcome, expected words)} of one process running every case of `tool`."""
    outcomes = run_tool(tool, {name: [*args, *extra] for name, (args, _)
                               in cases.items()}, root)
    return {name: (outcomes[name], words) for name, (_, words) in cases.items()}


def check_outcome(outcome, words, tool, success):
    """Words None: the case succeeds and prints `success`; else one clear line."""
    if words is None:
        assert outcome["code"] == 0, outcome["stderr"][-3000:]
        assert success in outcome["stdout"]
    else:
        one_line_error(outcome, tool, *words)


@pytest.fixture(scope="module")
def evaluate_outcomes(files):
    return tool_outcomes("tools.evaluate", evaluate_cases(files), files["root"], EVALUATE)


@pytest.mark.parametrize("case", list(evaluate_cases(NO_FILES)))
@pytest.mark.slow
def test_tools_evaluate(evaluate_outcomes, case):
    check_outcome(*evaluate_outcomes[case], "tools.evaluate", "NLL (k=5)")


# -- tools.sample -----------------------------------------------------------------------------

COUNT = "--num_samples must be a positive integer (at most 10000)"


def sample_cases(f):
    saved, tflite = f["saved_model"], f["tflite_float32"]
    png = f"--output={f['root']}/samples.png"
    return {
        "tflite -1": ([tflite, "--num_samples=-1"], (COUNT,)),
        "tflite 0": ([tflite, "--num_samples=0"], (COUNT,)),
        "saved 10**6": ([saved, "--num_samples=1000000"], (COUNT,)),
        "saved 0": ([saved, "--num_samples=0"], (COUNT,)),
        "cut tflite": ([f["cut_tflite"]], ("cannot be loaded as a tfvae .tflite file",)),
        "cut saved model": ([f["cut_saved_model"]], ("cannot be loaded as a SavedModel",)),
        "missing model": ([f"{f['root']}/none"], ("is neither a .tflite file nor",)),
        "wrong shape": ([saved, f"--images={f['wrong_shape']}"], (
            "images must have shape [batch, 8, 8, 1]",)),
        "NaN": ([saved, f"--images={f['nan']}"], ("has NaN",)),
        "cut npy": ([saved, f"--images={f['cut_npy']}"], ("cannot be read as a .npy",)),
        "tflite reconstructions": ([tflite, f"--images={f['good']}"], ("holds only",)),
        "zero columns": ([saved, "--columns=0"], ("--columns=0",)),
        "draws of a Bernoulli model": ([tflite, "--draws"], ("has no draws output",)),
        "tflite temperatures": ([tflite, "--temperature=0.5,1"], (
            "--temperature gives 2 temperatures; this model has 1 stochastic layers",)),
        "saved zero temperature": ([saved, "--temperature=0"], (
            "--temperature must be a positive number",)),
        "tflite wide codes": ([tflite, f"--codes={f['wide_codes']}"], (
            "wide_codes.npy has shape (2, 5); z must have shape [batch, 3]",)),
        "tflite one code": ([tflite, f"--codes={f['one_code']}"], (
            "has shape (3,); z must have shape [batch, 3]",)),
        "tflite NaN codes": ([tflite, f"--codes={f['nan_codes']}"], (
            "has NaN (first in code 1); z must be finite numbers",)),
        "saved NaN codes": ([saved, f"--codes={f['nan_codes']}"], (
            "has NaN (first in code 1)",)),
        "image file as codes": ([tflite, f"--codes={f['good']}"], (
            "has shape (6, 8, 8, 1); z must have shape [batch, 3]",)),
        "tflite good": ([tflite, "--num_samples=4", png, f"--codes={f['codes']}",
                         f"--decoded={f['root']}/decoded.png"], None),
        "saved good": ([saved, "--num_samples=4", png, f"--images={f['good']}",
                        f"--reconstructions={f['root']}/pairs.png"], None),
    }


@pytest.fixture(scope="module")
def sample_outcomes(files):
    return tool_outcomes("tools.sample", sample_cases(files), files["root"])


@pytest.mark.parametrize("case", list(sample_cases(NO_FILES)))
@pytest.mark.slow
def test_tools_sample(sample_outcomes, case):
    check_outcome(*sample_outcomes[case], "tools.sample", "samples:")


@pytest.mark.slow
def test_tools_sample_decodes_codes_through_litert(sample_outcomes, files):
    assert "decoded:" in sample_outcomes["tflite good"][0]["stdout"]
    assert os.path.getsize(os.path.join(files["root"], "decoded.png")) > 0


LITERT_WITHOUT_TENSORFLOW = """
import sys
sys.modules["tensorflow"] = None  # as on a device without TensorFlow
import numpy as np
from tfvae import checks
from tools.samplers import TFLiteSampler
sampler = TFLiteSampler(sys.argv[1])
for count in (-1, 0, checks.MAX_SAMPLES + 1, 2.5):
    try:
        sampler.sample(count)  # -1 reached LiteRT and crashed the process (exit 139)
    except checks.InputError as error:
        print(error)
print(sampler.sample(3).shape)
for z in (np.zeros((2, 5)), np.zeros(3), np.full((2, 3), np.nan), np.zeros((0, 3))):
    try:
        sampler.decode(z)  # (2, 5) failed in XNNPack, (3,) passed, NaN decoded to NaN
    except checks.InputError as error:
        print(error)
print(sampler.decode(np.zeros((2, 3))).shape)
"""


def test_the_litert_sampler_refuses_counts_before_invoking_without_tensorflow(files):
    """The .tflite path of tools.sample needs only numpy and ai-edge-litert."""
    result = subprocess.run([sys.executable, "-c", LITERT_WITHOUT_TENSORFLOW,
                             files["tflite_float32"]], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[:4] == [f"{COUNT[2:]}, got {count!r}." for count in (
        -1, 0, checks.MAX_SAMPLES + 1, 2.5)]
    assert lines[4] == str((3, *IMAGE_SHAPE))
    assert lines[5:] == [
        "the codes has shape (2, 5); z must have shape [batch, 3] (the model's codes, "
        "all layers top first).",
        "the codes has shape (3,); z must have shape [batch, 3] (the model's codes, all "
        "layers top first).",
        "the codes has NaN (first in code 0); z must be finite numbers.",
        "the codes holds no codes.",
        str((2, *IMAGE_SHAPE))]


# -- tools.export -----------------------------------------------------------------------------

def export_cases(f):
    base = f"--base_dir={f['exports_base']}"
    good = f"--checkpoint={f['keras']}"
    return {
        "missing checkpoint": ([f"--checkpoint={f['root']}/none.keras", base], (
            "none.keras does not exist",)),
        "cut checkpoint": ([f"--checkpoint={f['cut_keras']}", base], (
            "cannot be read as a tfvae .keras model",)),
        "not a VAE": ([f"--checkpoint={f['plain_keras']}", base], (
            "holds a Sequential, not a tfvae VAE",)),
        "metadata not JSON": ([good, base, f"--metadata={f['bad_json']}"], (
            "is not JSON",)),
        "version taken": ([good, base, "--name=tiny", "--version=1", "--tflite="], (
            "exists and is not empty", "nothing was written")),
        "unknown quantization": ([good, base, "--tflite=int4"], (
            "Unknown quantization 'int4'", "nothing was written")),
        "version 0": ([good, base, "--version=0"], ("--version=0",)),
        "base dir under a file": ([good, f"--base_dir={f['a_file']}/models"], (
            "a_file",)),
        "a SavedModel": ([f"--checkpoint={f['saved_model']}", base], (
            "is a SavedModel without a .keras file; give a .keras file, a run",)),
        "a folder of no run": ([f"--checkpoint={f['exports_base']}", base], (
            "is not a .keras file, a trainer output directory (model.keras)",)),
    }


@pytest.mark.slow
def test_tools_export(files, tmp_path):
    f = {**files, "exports_base": os.path.dirname(os.path.dirname(files["saved_model"]))}
    for outcome, words in tool_outcomes("tools.export", export_cases(f),
                                        files["root"]).values():
        one_line_error(outcome, "tools.export", *words)
    # Nothing half-written beside the one good version.
    assert os.listdir(os.path.join(f["exports_base"], "tiny")) == ["1"]
    # A run directory (the fixture's root holds model.keras) exports its model.
    run_dir = run_tool("tools.export", {"run": [
        f"--checkpoint={files['root']}", f"--base_dir={f['exports_base']}",
        "--name=from_run", "--tflite="]}, files["root"])["run"]
    assert run_dir["code"] == 0, run_dir["stderr"][-3000:]
    assert os.path.isfile(os.path.join(f["exports_base"], "from_run", "1",
                                       "saved_model.pb"))
    # A trainer's run directory: the dataset and class names of its metrics.json.
    (tmp_path / "run").mkdir()
    shutil.copy(os.path.join(files["root"], "model.keras"), tmp_path / "run")
    names = ["zero", "one", "two"]
    (tmp_path / "run" / "metrics.json").write_text(json.dumps(
        {"dataset": "three_patterns", "class_names": names}))
    outcome = run_tool("tools.export", {"run": [
        f"--checkpoint={tmp_path / 'run'}", f"--base_dir={tmp_path / 'exports'}",
        "--tflite="]}, files["root"])["run"]
    assert outcome["code"] == 0, outcome["stderr"][-3000:]
    metadata = json.loads((tmp_path / "exports" / "vae" / "1" / "metadata.json").read_text())
    assert (metadata["dataset"], metadata["class_names"]) == ("three_patterns", names)


# -- tools.visualize --------------------------------------------------------------------------

VISUALIZE = ["--num_samples=4", "--num_reconstructions=2", "--interpolation_pairs=1",
             "--interpolation_steps=2", "--manifold_size=2", "--scatter_images=6"]
SHAPE_WORDS = ("has shape (4, 7, 8, 1)", "images must have shape [batch, 8, 8, 1]")


def visualize_cases(f):
    model, out = f"--checkpoint={f['keras']}", f"--output_dir={f['root']}/figures"
    npy = {name: f"--images_npy={f[name]}" for name in (
        "good", "wrong_shape", "nan", "cut_npy")}
    return {
        "nothing to draw": ([out], ("pass --checkpoint",)),
        "extra arguments": ([model, out, "a", "b"], ("unexpected arguments: b",)),
        "missing model": ([f"--checkpoint={f['root']}/none.keras", out], (
            "is not a .keras file",)),
        "saved model": ([f"--checkpoint={f['saved_model']}", out], (
            "is a SavedModel", "tools.sample")),
        "cut keras": ([f"--checkpoint={f['cut_keras']}", out, npy["good"]], (
            "cannot be read as a tfvae .keras model",)),
        "not a VAE": ([f"--checkpoint={f['plain_keras']}", out, npy["good"]], (
            "holds a Sequential, not a tfvae VAE",)),
        "wrong shape": ([model, out, npy["wrong_shape"]], SHAPE_WORDS),
        "NaN": ([model, out, npy["nan"]], ("has NaN (first in image 1)",)),
        "cut npy": ([model, out, npy["cut_npy"]], ("cannot be read as a .npy",)),
        "missing npy": ([model, out, f"--images_npy={f['root']}/none.npy"], (
            "none.npy does not exist",)),
        "labels alone": ([model, out, f"--labels_npy={f['two_labels']}"], (
            "pass both",)),
        "labels of other images": ([model, out, npy["good"],
                                    f"--labels_npy={f['two_labels']}"], (
            "has shape (2,); expected one label per image", "shape (6,)")),
        "too few images": ([model, out, f"--images_npy={f['one_image']}"], (
            "--interpolation_pairs=1 needs 2 images, got 1",)),
        "manifold dims out of range": ([model, out, npy["good"], "--manifold_dims=0,7"],
                                       ("--manifold_dims must be two different latent "
                                        "dimensions 0 to 2, got '0,7'",)),
        "manifold dims not numbers": ([model, out, npy["good"], "--manifold_dims=a,b"],
                                      ("--manifold_dims must be two",)),
        "zero samples": ([model, out, npy["good"], "--num_samples=0"], (
            "--num_samples=0",)),
        "missing curves": ([out, f"--curves={f['root']}/none"], ("no learning curves",)),
        "curves floor not a number": ([out, f"--curves={f['curve']}", "--curves_ymin=nan"],
                                      ("--curves_ymin must be a finite number",)),
        "curves floor above the curves": ([out, f"--curves={f['curve']}",
                                           "--curves_ymin=-100"], (
            "no learning curves: the lowest value to show, -100, is above every elbo",)),
        "output under a file": ([model, npy["good"], f"--output_dir={f['a_file']}/figs"],
                                ("a_file",)),
        "good": ([model, out, npy["good"], "--manifold_dims=0,2"], None),
    }


@pytest.fixture(scope="module")
def visualize_outcomes(files):
    return tool_outcomes("tools.visualize", visualize_cases(files), files["root"],
                         VISUALIZE)


@pytest.mark.parametrize("case", list(visualize_cases(NO_FILES)))
@pytest.mark.slow
def test_tools_visualize(visualize_outcomes, case):
    check_outcome(*visualize_outcomes[case], "tools.visualize", "manifold.png")


# -- tools.grad_variance ----------------------------------------------------------------------

def grad_variance_cases(f):
    model = f"--checkpoint={f['keras']}"
    conditional = f"--checkpoint={f['conditional']}"
    return {
        "missing checkpoint": ([f"--checkpoint={f['root']}/none.keras"], (
            "none.keras does not exist",)),
        "cut checkpoint": ([f"--checkpoint={f['cut_keras']}"], (
            "cannot be read as a tfvae .keras model",)),
        "wrong shape": ([model, f"--images={f['wrong_shape']}"], SHAPE_WORDS),
        "NaN": ([model, f"--images={f['nan']}"], ("has NaN (first in image 1)",)),
        "cut npy": ([model, f"--images={f['cut_npy']}"], ("cannot be read as a .npy",)),
        "one draw": ([model, "--num_draws=1"], ("--num_draws=1",)),
        "hidden units": (["--hidden_units=8,a"], (
            "--hidden_units must be positive integers, got '8,a'",)),
        "extra arguments": ([model, "more"], ("unexpected arguments: more",)),
        "good": ([model, f"--images={f['good']}"], None),
        # Conditional models: labelled images (a traceback before issue 27b).
        "conditional synthetic": ([conditional], None),
        "conditional labelled": ([conditional, f"--images={f['good']}",
                                  f"--image_labels={f['six_labels']}"], None),
        "conditional unlabelled": ([conditional, f"--images={f['good']}"], (
            "the model is class-conditional: give the labels of --images with "
            "--image_labels",)),
        "conditional labels of other images": ([conditional, f"--images={f['good']}",
                                                f"--image_labels={f['two_labels']}"], (
            "holds 2 labels for the 6 images of --images",)),
        "labels of an unconditional model": ([model, f"--images={f['good']}",
                                              f"--image_labels={f['six_labels']}"], (
            "--image_labels are the labels of --images, for a class-conditional",)),
        # A hierarchy: the model's score-function estimator takes one layer.
        "hierarchy": ([f"--checkpoint={f['hierarchy']}"], (
            "hierarchy.keras cannot take both estimators (gradient_estimator="
            "'score_function' supports one stochastic layer",
            "compares them on models of one stochastic layer")),
    }


@pytest.fixture(scope="module")
def grad_variance_outcomes(files):
    return tool_outcomes("tools.grad_variance", grad_variance_cases(files),
                         files["root"], ["--num_draws=3", "--batch_size=4"])


@pytest.mark.parametrize("case", list(grad_variance_cases(NO_FILES)))
@pytest.mark.slow
def test_tools_grad_variance(grad_variance_outcomes, case):
    check_outcome(*grad_variance_outcomes[case], "tools.grad_variance", "var score")


# -- tools.benchmark --------------------------------------------------------------------------

@pytest.mark.slow
def test_tools_benchmark(files):
    """Every case fails before any timing (a good run is in test_evaluate.py)."""
    cases = {
        "missing config": ([f"--config={files['root']}/none.cfg"], (
            "--config", "Unable to open flagfile", "none.cfg")),
        "config a folder": ([f"--config={files['root']}"], ("Is a directory",)),
        "typo in config": ([f"--config={files['typo_cfg']}"], (
            "Unknown command line flag 'batch_sise'. Did you mean: batch_size ?",)),
        "list of words": ([f"--config={files['list_cfg']}"], (
            "--encoder_hidden_units must be a comma-separated list of integers",)),
        "zero epochs": (["--epochs=0"], ("--epochs=0",)),
        "unknown jit": (["--jit=maybe"], ("--jit must list true and/or false",)),
        "unknown precision": (["--precision=float8"], ("--precision must list",)),
        "output under a file": ([f"--output={files['a_file']}/results.json"], (
            "a_file",)),
        "extra arguments": (["more"], ("unexpected arguments: more",)),
    }
    for outcome, words in tool_outcomes("tools.benchmark", cases,
                                        files["root"]).values():
        one_line_error(outcome, "tools.benchmark", *words)


# -- tools.label_consistency and tools.folder_benchmark ------------------------------------

@pytest.mark.slow
def test_tools_label_consistency_nll_gap_and_folder_benchmark(files):
    """Each case fails before any training (good runs: configs/README.md's figures)."""
    consistency = {
        "unconditional model": ([files["saved_model"]], (
            "is not a class-conditional model",)),
        "unconditional tflite": ([files["tflite_float32"]], (  # it raised AttributeError
            "is not a class-conditional model",)),
        "plain keras file": ([files["plain_keras"]], ("not a tfvae VAE",)),
        "no model": ([], ("usage: python -m tools.label_consistency MODEL",)),
        "a non-model classifier": ([files["saved_model"], f"--classifier={files['a_file']}"],
                                   ("is not a class-conditional model",)),
        "zero temperature": ([files["keras"], "--temperature=0"], (
            "--temperature must be a positive number",)),
        "nan temperature": ([files["keras"], "--temperature=nan"], (
            "--temperature must be a positive number",)),
        "temperature of an export": ([files["saved_model"], "--temperature=0.5"], (
            "is not a class-conditional model",)),  # it samples through the signature
        "temperatures of an export": ([files["saved_model"], "--temperature=0.5,1"], (
            "--temperature gives 2 temperatures; this model has 1 stochastic layers",)),
        "a temperature per layer, too many": ([files["keras"], "--temperature=0.5,1"], (
            "--temperature gives 2 temperatures; this model has 1 stochastic layers",)),
    }
    for outcome, words in tool_outcomes("tools.label_consistency", consistency,
                                        files["root"]).values():
        one_line_error(outcome, "tools.label_consistency", *words)
    gap = {
        "unconditional first": ([files["keras"], files["keras"]], (
            "give a class-conditional model, then an unconditional one",)),
        "one model": ([files["keras"]], ("usage: python -m tools.nll_gap",)),
    }
    for outcome, words in tool_outcomes("tools.nll_gap", gap, files["root"]).values():
        one_line_error(outcome, "tools.nll_gap", *words)
    benchmark = {
        "missing config": ([f"--config={files['root']}/none.cfg"], ("does not exist",)),
        "extra arguments": (["more"], ("unexpected arguments: more",)),
        "too few images": (["--num_images=5"], ("--num_images=5",)),
    }
    for outcome, words in tool_outcomes("tools.folder_benchmark", benchmark,
                                        files["root"]).values():
        one_line_error(outcome, "tools.folder_benchmark", *words)


# -- Ctrl-C -----------------------------------------------------------------------------------

@pytest.fixture
def default_sigint():
    """SIGINT as from a terminal (a shell's background job starts with it ignored)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_interruptible_ends_in_one_line_with_status_130(capsys, default_sigint):
    @cli.interruptible("tools.x", "nothing was written.")
    def main(argv):
        if argv == ["stop"]:
            raise KeyboardInterrupt
        if argv == ["signal"]:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:  # as TensorFlow can, into another error
                raise ValueError("Signature specifies 4 arguments, got: 2.") from None
        if argv == ["error"]:
            raise ValueError("a bug")
        return len(argv)

    assert main(["a", "b"]) == 2 and main.__name__ == "main"
    for argv in (["stop"], ["signal"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 130
        assert capsys.readouterr().err == "tools.x: interrupted; nothing was written.\n"
    with pytest.raises(ValueError, match="a bug"):  # no SIGINT: not an interruption
        main(["error"])
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_running_out_of_memory_in_a_tool_ends_in_one_line():
    """TensorFlow's ResourceExhaustedError (many lines) or a MemoryError: one line that
    names the allocation, what to lower and what was kept; status 1."""
    @cli.interruptible("tools.x", "nothing was written.", smaller="lower --batch_size")
    def main(argv):
        if argv == ["tf"]:
            raise tf.errors.ResourceExhaustedError(None, None, (
                "{{function_node __inference_log_px_99}} OOM when allocating tensor "
                "with shape[10000,28,28,384] and type float on /job:localhost\n\t "
                "[[{{node conv}}]]\nHint: If you want to see a list of allocated tensors"))
        raise MemoryError

    for argv, what in ((["tf"], " (OOM when allocating tensor with "
                                "shape[10000,28,28,384])"), (["python"], "")):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == (f"tools.x: error: out of memory{what}; lower "
                                   "--batch_size; nothing was written.")


def test_every_tool_main_is_interruptible():
    """One wrapper for all: each tool's main is decorated with cli.interruptible."""
    tools = sorted(name for name in os.listdir(os.path.join(REPO, "tools"))
                   if name.endswith(".py") and name not in NOT_TOOLS)
    assert len(tools) == 14  # the 11, tools.serve, tools.load_test, tools.train_classifier
    for name in tools:
        with open(os.path.join(REPO, "tools", name)) as f:
            tree = ast.parse(f.read())
        main, = [node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name == "main"]
        assert any(ast.unparse(d).startswith("cli.interruptible(PROGRAM")
                   for d in main.decorator_list), name


@pytest.mark.slow
def test_ctrl_c_in_a_tool_ends_in_one_line():
    """A real SIGINT while the tool computes (here: gradient draws)."""
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "tools.grad_variance", "--num_draws=1000000",
         "--batch_size=4", "--hidden_units=8", "--latent_dim=2"], cwd=REPO, env=ENV,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As from a terminal: a shell's background job would start with SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        assert "draws per estimator" in process.stdout.readline()
        time.sleep(2)  # into the draws
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert stderr.strip().splitlines()[-1] == (
        "tools.grad_variance: interrupted; nothing was written.")


# -- the SavedModel -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def loaded(files):
    return tf.saved_model.load(files["saved_model"])


def test_signatures_declare_the_real_shapes(files, loaded):
    """What `saved_model_cli show --all` lists (the SignatureDefs), and what the
    TF2 loader sees: the batch is free, the rest fixed."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(files["saved_model"], "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    signature_defs = proto.meta_graphs[0].signature_def
    image_dims, z_dims = [-1, *IMAGE_SHAPE], [-1, LATENT_DIM]
    expected = {("encode", "images"): image_dims, ("reconstruct", "images"): image_dims,
                ("elbo", "images"): image_dims, ("log_prob", "images"): image_dims,
                ("decode", "z"): z_dims, ("sample", "num_samples"): []}
    for (key, name), dims in expected.items():
        shape = signature_defs[key].inputs[name].tensor_shape
        assert [d.size for d in shape.dim] == dims, (key, name)
        spec = loaded.signatures[key].structured_input_signature[1][name]
        assert spec.shape.as_list() == ([None, *dims[1:]] if dims else []), (key, name)


@pytest.mark.parametrize("key", ["encode", "reconstruct", "elbo", "log_prob"])
def test_nan_pixels_are_named_by_the_saved_model(loaded, key):
    images = binary_images(3)
    images[2, 4, 4, 0] = np.nan
    extra = {"num_samples": tf.constant(4)} if key == "log_prob" else {}
    for _ in range(5):  # The check runs first on every call, not by luck.
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"images must be float32 in \[0, 1\]; found NaN"):
            loaded.signatures[key](images=tf.constant(images), **extra)


def test_nan_codes_are_named_by_the_saved_model(loaded):
    z = np.zeros((3, LATENT_DIM), np.float32)
    z[1, 2] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"z must be finite numbers; found NaN or Inf"):
        loaded.signatures["decode"](z=tf.constant(z))


def test_wrong_shapes_are_named_through_the_declared_shape(loaded):
    """With the real shapes declared, the readable checks still run first."""
    for _ in range(5):
        with pytest.raises(tf.errors.InvalidArgumentError,
                           match=r"images must have shape \[batch, 8, 8, 1\], got"):
            loaded.signatures["log_prob"](images=tf.zeros((2, 8, 8, 3)),
                                          num_samples=tf.constant(3))


def test_sample_refuses_counts_above_the_bound_before_allocating(loaded, files):
    start = time.perf_counter()
    for count in (10**7, checks.MAX_SAMPLES + 1, 2**31 - 1, 0, -1):
        with pytest.raises(tf.errors.InvalidArgumentError, match=(
                rf"num_samples must be a positive integer \(at most "
                rf"{checks.MAX_SAMPLES}\), as an int32 scalar; got\] \[{count}\]")):
            loaded.signatures["sample"](num_samples=tf.constant(count))
    assert time.perf_counter() - start < 10  # 10**7 samples would take 79 GB
    out = loaded.signatures["sample"](num_samples=tf.constant(checks.MAX_SAMPLES))
    assert out["images"].shape == (checks.MAX_SAMPLES, *IMAGE_SHAPE)
    with open(files["metadata"], encoding="utf-8") as f:
        info = json.load(f)
    assert info["max_samples"] == checks.MAX_SAMPLES
    assert f"1 to {checks.MAX_SAMPLES}" in info["signatures"]["sample"]


def test_tflite_decode_declares_its_shape(files):
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_path=files["tflite_float32"]).get_signature_runner(
        "decode")
    assert runner.get_input_details()["z"]["shape_signature"].tolist() == [
        -1, LATENT_DIM]


# -- exports appear whole or not at all --------------------------------------------------------

@pytest.mark.slow
def test_a_failing_conversion_leaves_no_version_folder(files, tmp_path, monkeypatch):
    model = keras.saving.load_model(files["keras"])

    def broken(*args, **kwargs):
        raise RuntimeError("converter broke")

    monkeypatch.setattr(export, "tflite_from_saved_model", broken)
    with pytest.raises(RuntimeError, match="converter broke"):
        export.export_model(model, str(tmp_path), "vae")
    assert os.listdir(tmp_path / "vae") == []  # no version, no hidden staging folder
    monkeypatch.undo()
    paths = export.export_model(model, str(tmp_path), "vae")
    assert paths["saved_model"] == str(tmp_path / "vae" / "1")
    assert sorted(os.listdir(tmp_path / "vae")) == ["1"]


def _train(*argv):
    with pytest.raises(SystemExit) as done:
        train.run(["tfvae.train", *TINY_RUN, *argv])
    return done.value.code


@pytest.mark.parametrize("error", [
    tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with "
                                     "shape[64,28,28,256] and type float\nHint: ..."),
    MemoryError()])
def test_the_trainer_out_of_memory_says_what_to_lower_in_one_line(
        error, monkeypatch, capsys):
    def out_of_memory(**options):
        raise error

    monkeypatch.setattr(train, "train_and_evaluate", out_of_memory)
    line = _train("--output_dir=unused")  # sys.exit's message: status 1, on stderr
    assert "Traceback" not in capsys.readouterr().err and "\n" not in line
    assert line.startswith("tfvae.train: error: out of memory")
    assert "lower --batch_size" in line and "resumes from the run directory" in line
    assert cli.is_out_of_memory(error)  # the trainer catches what the tools catch


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.slow
def test_a_mixed_precision_run_exports_whole(policy, tmp_path, mock_mnist):
    metrics = train.run(["tfvae.train", *TINY_RUN, "--epochs=1", "--use_ema",
                         f"--mixed_precision={policy}", f"--output_dir={tmp_path}/run",
                         f"--export_dir={tmp_path}/exports"])
    assert np.isfinite(metrics["test"]["elbo"])
    version = tmp_path / "exports" / "vae_mnist" / "1"
    assert metrics["export"]["saved_model"] == str(version)
    with open(tmp_path / "run" / "metrics.json") as f:
        assert json.load(f)["export"]["tflite_float32"] == str(version /
                                                                "vae_mnist.tflite")
    with open(version / "metadata.json") as f:
        assert json.load(f)["trained_dtype_policy"] == policy
    # The float32 copy has the trained weights: TFLite decodes as the .keras model.
    from ai_edge_litert.interpreter import Interpreter

    model = keras.saving.load_model(tmp_path / "run" / "model.keras")
    z = np.random.default_rng(0).normal(size=(4, 2)).astype(np.float32)
    decode = Interpreter(model_path=str(version / "vae_mnist.tflite"))
    out = decode.get_signature_runner("decode")(z=z)["images"]
    np.testing.assert_allclose(out, np.asarray(model.decode(z).mean(), np.float32),
                               atol=0.05)  # the model computes in 16 bits


def test_a_failed_export_keeps_the_test_figures(tmp_path, mock_mnist, monkeypatch,
                                                capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("converter broke")

    monkeypatch.setattr(export, "tflite_from_saved_model", broken)
    code = _train("--epochs=1", f"--output_dir={tmp_path}/run",
                  f"--export_dir={tmp_path}/exports")
    assert code.startswith("tfvae.train: error: the export failed (RuntimeError: "
                           "converter broke); nothing was left") and "\n" not in code
    assert f"--checkpoint={tmp_path}/run/model.keras" in code
    with open(tmp_path / "run" / "metrics.json") as f:
        metrics = json.load(f)
    assert np.isfinite(metrics["test"]["elbo"])
    assert metrics["export_error"] == "RuntimeError: converter broke"
    assert os.listdir(tmp_path / "exports" / "vae_mnist") == []


# -- the trainer ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, words", [
    (["--strategy=tpu"], "strategy='tpu' found no TPU (no --tpu address given)"),
    (["--strategy=tpu", "--tpu=local"], "strategy='tpu' found no TPU at 'local': "),
])
def test_a_tpu_strategy_without_a_tpu_fails_in_one_line(argv, words, tmp_path):
    code = _train(*argv, f"--output_dir={tmp_path}", "--noexport")
    assert code.startswith(f"tfvae.train: error: {words}") and "\n" not in code


class _Interrupt(keras.callbacks.Callback):
    """Ctrl-C after optimizer step `step`: SIGINT raises KeyboardInterrupt."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_end(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise KeyboardInterrupt


def _interrupted_after(step, monkeypatch):
    """train.train_and_evaluate with Ctrl-C after `step`, as the CLI calls it."""
    original = train.train_and_evaluate

    def interrupted(output_dir, **options):
        return original(output_dir, callbacks=[_Interrupt(step)], **options)

    monkeypatch.setattr(train, "train_and_evaluate", interrupted)


@pytest.mark.slow
def test_ctrl_c_says_where_the_backup_is_and_the_same_command_resumes(
        tmp_path, mock_mnist, monkeypatch, capsys):
    run = ["--epochs=2", "--backup_save_freq=2", "--use_ema", "--noexport",
           f"--output_dir={tmp_path}/run"]
    _interrupted_after(4, monkeypatch)  # epoch 2 (steps 4-6), backups after 2 and 4
    assert _train(*run) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(lines)
    assert lines[-1] == (f"tfvae.train: interrupted in epoch 2; the backup is in "
                         f"{tmp_path}/run/backup: the same command resumes from it (at "
                         f"epoch 2).")
    monkeypatch.undo()
    metrics = train.run(["tfvae.train", *TINY_RUN, *run])
    assert "Resuming from the backup" in capsys.readouterr().out
    assert metrics["resumed_from"] == {"epoch": 1, "step": 4}
    assert isinstance(keras.saving.load_model(
        tmp_path / "run" / "model.keras").optimizer, builders.EMAWarmup)


def test_ctrl_c_before_the_first_backup_says_so(tmp_path, mock_mnist, monkeypatch,
                                                capsys):
    _interrupted_after(1, monkeypatch)
    assert _train("--epochs=2", "--noexport", f"--output_dir={tmp_path}") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tfvae.train: interrupted in epoch 1, before the first backup; the same command "
        "starts the run again.")


@pytest.mark.slow
def test_ctrl_c_after_training_names_the_trained_model(tmp_path, mock_mnist, monkeypatch,
                                                      capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "tflite_from_saved_model", interrupted)
    assert _train("--epochs=1", f"--output_dir={tmp_path}/run",
                  f"--export_dir={tmp_path}/exports") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"tfvae.train: interrupted after training, while testing or exporting; the "
        f"trained model is in {tmp_path}/run/best.keras (no export was left "
        f"half-written): test or export it with tools.evaluate or tools.export.")
    assert os.listdir(tmp_path / "exports" / "vae_mnist") == []
    keras.saving.load_model(tmp_path / "run" / "best.keras")


def test_ctrl_c_before_training_says_nothing_was_trained(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. while TFDS prepares the data

    monkeypatch.setattr(train.data, "dataset_info", interrupted)
    assert _train(f"--output_dir={tmp_path}", "--noexport") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "tfvae.train: interrupted before training started; nothing was trained: the "
        "same command starts the run.")


# -- the shared rules --------------------------------------------------------------------------

def test_as_images_takes_what_the_rules_allow():
    binary = binary_images(2)
    np.testing.assert_array_equal(checks.as_images(binary[..., 0], IMAGE_SHAPE), binary)
    np.testing.assert_array_equal(checks.as_images(binary > 0.5, IMAGE_SHAPE), binary)
    np.testing.assert_array_equal(  # 0/1 integers are binary images, not near-black
        checks.as_images(binary.astype(np.uint8), IMAGE_SHAPE), binary)
    np.testing.assert_allclose(checks.as_images((binary * 255).astype(np.int64),
                                                IMAGE_SHAPE), binary)
    assert checks.as_images(binary.astype(np.float64), IMAGE_SHAPE).dtype == np.float32
    with pytest.raises(checks.InputError, match=r"has infinite values \(first in image 1"):
        checks.as_images(np.stack([binary[0], np.full_like(binary[0], np.inf)]),
                         IMAGE_SHAPE)
    with pytest.raises(checks.InputError, match=r"has shape \(2, 8, 8\);"):
        checks.as_images(binary[..., 0], (8, 8, 3))


@pytest.mark.parametrize("value", [0, -1, 2.5, 10_001, "3", None])
def test_check_count_refuses(value):
    with pytest.raises(checks.InputError, match="num_samples must be a positive integer"):
        checks.check_count(value, maximum=10_000)


def test_eager_model_calls_refuse_nan_with_the_words_of_check_values(files):
    model = keras.saving.load_model(files["keras"])
    images = binary_images(3)
    images[1, 0, 0, 0] = np.nan
    with pytest.raises(checks.InputError) as expected:
        checks.check_values(images)
    for call in (model.elbo, model.encode, model.reconstruct,
                 lambda x: model.log_importance_weights(x, 2)):
        with pytest.raises(checks.InputError) as refused:
            call(images)
        assert str(refused.value) == str(expected.value)
    assert "has NaN (first in image 1)" in str(expected.value)


# -- fit / evaluate / predict on arrays (issue 27) -----------------------------------------------

def _compiled(num_classes=0):
    keras.utils.set_random_seed(0)
    model = tfvae.VAE(tfvae.MLPEncoder(2, (8,), context_dim=num_classes),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (8,)), num_classes=num_classes)
    model.compile(optimizer="adam", jit_compile=False)
    return model


def test_integer_images_are_divided_by_255_in_fit_evaluate_and_predict():
    model = _compiled()
    pixels = (binary_images(32) * 255).astype(np.uint8)  # 0 and 255, as PNGs hold them
    history = model.fit(pixels, epochs=1, batch_size=16, verbose=0).history
    # 8 x 8 binary images cost at most ~64 log 2 = 44 nats at init; pixels of 255 taken
    # as values cost thousands (the +66 million of 28 x 28 MNIST in issue 27).
    assert -100 < history["elbo"][0] < 0
    assert -100 < model.evaluate(pixels, verbose=0, return_dict=True)["elbo"] < 0
    assert np.all(model.predict(pixels, verbose=0)["elbo"] > -100)


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_a_dataset_of_the_wrong_dtype_or_shape_is_refused_in_one_line(method):
    model = _compiled()
    strings = tf.data.Dataset.from_tensor_slices(np.full((8, *IMAGE_SHAPE), "0")).batch(4)
    with pytest.raises(ValueError, match=r"the dataset given as x yields string images of "
                       r"shape \(None, 8, 8, 1\); the model expects float32 images"):
        getattr(model, method)(strings, verbose=0)
    small = tf.data.Dataset.from_tensor_slices(binary_images(8)[:, :4]).batch(4)
    with pytest.raises(ValueError, match=r"shape \(None, 4, 8, 1\); the model expects"):
        getattr(model, method)(small, verbose=0)
    good = tf.data.Dataset.from_tensor_slices(binary_images(8)).batch(4)
    assert getattr(model, method)(good, verbose=0) is not None


@pytest.mark.parametrize("method", ["fit", "evaluate", "predict", "log_px"])
@pytest.mark.parametrize("bad", [np.nan, 2.0, -1.0])
def test_a_dataset_with_bad_values_stops_with_one_line(method, bad):
    model = _compiled()
    images = binary_images(16)
    images[9, 2, 3, 0] = bad  # in the third batch of four: found as it is read
    dataset = tf.data.Dataset.from_tensor_slices(images).batch(4)
    with pytest.raises(ValueError, match=r"^the dataset given as (x|data) holds a batch "
                       r"with NaN, Inf or values outside \[0, 1\] \(0..255 for integer "
                       r"pixels\); images must be float32 in \[0, 1\]\.$"):
        if method == "log_px":
            model.log_px(dataset, num_samples=2)
        else:
            getattr(model, method)(dataset, verbose=0)
    pixels = tf.data.Dataset.from_tensor_slices(
        (binary_images(16) * 255).astype(np.uint8)).batch(4)  # integers up to 255 pass
    assert model.evaluate(pixels, verbose=0) is not None


def test_a_gaussian_model_takes_any_finite_values_from_a_dataset_but_not_nan():
    keras.utils.set_random_seed(0)
    model = tfvae.VAE(tfvae.MLPEncoder(2, (8,)),
                      tfvae.MLPDecoder(IMAGE_SHAPE, (8,), likelihood="gaussian"))
    model.compile(optimizer="adam", jit_compile=False)
    values = np.random.default_rng(0).normal(0, 3, (8, *IMAGE_SHAPE)).astype(np.float32)
    assert model.evaluate(tf.data.Dataset.from_tensor_slices(values).batch(4), verbose=0)
    values[5, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^the dataset given as x holds a batch with NaN "
                       r"or Inf; images must be finite\.$"):
        model.fit(tf.data.Dataset.from_tensor_slices(values).batch(4), verbose=0)


ARRAY_CASES = {  # name: (images, labels or None, words of the ValueError)
    "NaN": (np.where(np.arange(4)[:, None, None, None] == 1, np.nan, binary_images(4)),
            None, r"x has NaN \(first in image 1\); images must be float32 in \[0, 1\]"),
    "float 0-255": (binary_images(4) * 255, None, r"divide 0-255 images by 255"),
    "wrong shape": (np.zeros((4, 7, 8, 1), np.float32), None,
                    r"x has shape \(4, 7, 8, 1\); images must have shape \[batch, 8, 8, 1\]"),
    "label out of range": (binary_images(4), np.array([0, 1, 5, 2]),
                           r"x\['labels'\] hold 5 \(entry 2\); labels must be integer "
                           r"class ids in 0..2"),
    "negative label": (binary_images(4), np.array([0, -1, 1, 2]), r"hold -1 \(entry 1\)"),
    "label count": (binary_images(4), np.zeros(3, np.int64),
                    r"x\['labels'\] has 3 entries for 4 images"),
    "float labels": (binary_images(4), np.zeros(4), r"are float64; labels must be"),
}


@pytest.mark.parametrize("case", ARRAY_CASES)
@pytest.mark.parametrize("method", ["fit", "evaluate", "predict"])
def test_bad_arrays_are_refused_before_the_first_step(case, method):
    images, labels, words = ARRAY_CASES[case]
    model = _compiled(num_classes=3 if labels is not None else 0)
    x = images if labels is None else {"images": images, "labels": labels}
    with pytest.raises(ValueError, match=words):
        getattr(model, method)(x, verbose=0)
    assert int(model.optimizer.iterations) == 0


def test_a_conditional_model_refuses_images_alone_and_bad_validation_data():
    model = _compiled(num_classes=3)
    with pytest.raises(ValueError, match=r"This VAE is conditional: pass \{'images'"):
        model.fit(binary_images(4), verbose=0)
    good = {"images": binary_images(4), "labels": np.arange(4) % 3}
    with pytest.raises(ValueError, match=r"validation_data\['labels'\] hold 3"):
        model.fit(good, validation_data={**good, "labels": np.arange(4)}, verbose=0)
    assert int(model.optimizer.iterations) == 0
    # One label for all images is broadcast, as `checks.as_labels` allows.
    assert model.predict({**good, "labels": np.array([2])}, verbose=0)["elbo"].shape == (4,)


# -- sizes beyond what memory allows (issue 27) ---------------------------------------------

@pytest.mark.parametrize("flag, words", [
    ("--flow_steps=100000", "flow_steps must be a positive integer (at most 64), got 100000"),
    ("--flow_hidden_units=100000", "flow_hidden_units must be a positive integer (at most 8192)"),
    ("--encoder_hidden_units=500,100000", "each of encoder_hidden_units must be a positive "
     "integer (at most 8192), got 100000"),
    ("--top_down_latent_dims=" + ",".join(["2"] * 65), "top_down_latent_dims lists 65 "
     "layers; at most 64"),
    ("--prior_components=1000000", "prior_components must be a positive integer (at most "
     "10000)"),
    ("--latent_dim=100000", "latent_dim must be a positive integer (at most 8192)"),
])
def test_sizes_beyond_the_bounds_are_refused_before_anything_is_built(flag, words, tmp_path):
    """configs/mnist_iaf.cfg --flow_steps=100000 segfaulted while building."""
    output = tmp_path / "run"
    with pytest.raises(SystemExit) as done:
        train.run(["tfvae.train", f"--flagfile={REPO}/configs/mnist_iaf.cfg", flag,
                   f"--output_dir={output}"])
    message = done.value.code
    assert message.startswith("tfvae.train: error: ") and "\n" not in message
    assert words in message, message
    assert not output.exists()  # nothing built, no data read, no directory made
    with pytest.raises(checks.InputError, match="flow_steps.*at most 64"):
        builders.build_model(IMAGE_SHAPE, posterior="iaf", flow_steps=65)


@pytest.mark.slow
def test_tflite_and_saved_model_samplers_know_their_image_shape(files):
    from tools.samplers import load_sampler

    for path in (files["tflite_float32"], files["saved_model"]):
        assert load_sampler(path).image_shape == IMAGE_SHAPE, path


TOOLS = sorted(name[:-3] for name in os.listdir(os.path.join(REPO, "tools"))
               if name.endswith(".py") and name not in NOT_TOOLS)


@pytest.mark.parametrize("program", [*(f"tools.{t}" for t in TOOLS), "tfvae.train"])
@pytest.mark.slow
def test_help_exits_with_status_0(program):
    """absl's --help exits with status 1; every command line's --help says 0."""
    done = subprocess.run([sys.executable, "-m", program, "--help"], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Try --helpfull to get a list of all flags." in done.stdout


def test_integer_tensors_and_datasets_are_divided_by_255_too():
    """Per batch in the graph (`data.integer_images`), eagerly by `checks.as_images`."""
    from tfvae import evaluate

    model = _compiled()
    binary = binary_images(32)
    pixels = (binary * 255).astype(np.uint8)
    np.testing.assert_array_equal(model.elbo(pixels, seed=[1, 2])["elbo"],
                                  model.elbo(binary, seed=[1, 2])["elbo"])
    np.testing.assert_array_equal(  # 0/1 integers are binary images
        model.elbo(binary.astype(np.int32), seed=[1, 2])["elbo"],
        model.elbo(binary, seed=[1, 2])["elbo"])
    with pytest.raises(checks.InputError, match=r"integer values in \[300, 300\]"):
        model.elbo(np.full((2, *IMAGE_SHAPE), 300, np.int32))
    history = model.fit(tf.data.Dataset.from_tensor_slices(pixels).batch(16), epochs=1,
                        verbose=0).history
    assert -100 < history["elbo"][0] < 0
    as_floats, as_pixels = (evaluate.importance_sampled_log_px(
        model, tf.data.Dataset.from_tensor_slices(x).batch(8), 4, batch_size=8,
        verbose=0, jit_compile=False).values for x in (binary, pixels))
    np.testing.assert_array_equal(as_pixels, as_floats)
