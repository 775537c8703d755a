"""Presets: a trained model by name, as keras-hub's `from_preset` gives one.

A preset is a version folder of an export, `<saved_models>/<name>/<version>/`, that
holds a `.keras` file beside the SavedModel and TFLite files (`export.export_model`
writes one). `resolve("hvae_binarized_mnist")` is the highest such version of that
name. A path is taken as it is, except that a model folder (one holding integer
versions) stands for its highest version with a `.keras` file. `VAE.from_preset`,
`rundir.locate_model` (and so every tool that takes a model) and the samplers of
`tools.sample` resolve names here.

Names are looked up, the first folder that has the name wins, in
  1. the `saved_models` argument (one folder or a list), when given; else
  2. the folders in $TFVAE_SAVED_MODELS (separated by os.pathsep), then
     ./saved_models, then the saved_models/ of the source checkout the package was
     imported from (a clone, or an editable install).
A package installed with `pip install .` has no checkout beside it: set
TFVAE_SAVED_MODELS to a clone's saved_models/, or give paths.

Needs no TensorFlow: the LiteRT path of `tools.sample` resolves names too.
"""

import os
import re

from tfvae import checks

ENV_VAR = "TFVAE_SAVED_MODELS"
CHECKOUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        "saved_models")
# A bare name (no folder, no file suffix): what `resolve` looks up when no file or
# folder of that name exists.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def search_path(saved_models=None):
    """The existing folders names are looked up in, in order, each once."""
    if saved_models is None:
        folders = [*filter(None, os.environ.get(ENV_VAR, "").split(os.pathsep)),
                   "saved_models", CHECKOUT]
    elif isinstance(saved_models, (str, os.PathLike)):
        folders = [saved_models]
    else:
        folders = list(saved_models)
    found, seen = [], set()
    for folder in map(os.fspath, folders):
        if os.path.isdir(folder) and os.path.realpath(folder) not in seen:
            seen.add(os.path.realpath(folder))
            found.append(folder)
    return found


def versions(model_dir):
    """The integer version folders of `model_dir`, highest first ([] if none)."""
    if not os.path.isdir(model_dir):
        return []
    numbers = [int(name) for name in os.listdir(model_dir) if re.fullmatch(r"\d+", name)
               and os.path.isdir(os.path.join(model_dir, name))]
    return [os.path.join(model_dir, str(n)) for n in sorted(numbers, reverse=True)]


def keras_file(version_dir):
    """The `.keras` file of a version folder: `<name>.keras`, else the only `.keras`
    file in it; None when it has none (or several)."""
    name = os.path.basename(os.path.dirname(os.path.abspath(version_dir)))
    if os.path.isfile(os.path.join(version_dir, f"{name}.keras")):
        return os.path.join(version_dir, f"{name}.keras")
    found = [f for f in os.listdir(version_dir) if f.endswith(".keras")] \
        if os.path.isdir(version_dir) else []
    return os.path.join(version_dir, found[0]) if len(found) == 1 else None


def newest(model_dir):
    """The highest version folder of `model_dir` that holds a `.keras` file, or None."""
    return next((v for v in versions(model_dir) if keras_file(v)), None)


def model_folders(saved_models=None):
    """{name: folder} of the model folders (holding integer versions) on the search
    path; a name in an earlier folder hides the same name in later ones."""
    found = {}
    for base in search_path(saved_models):
        for name in sorted(os.listdir(base)):
            if name not in found and versions(os.path.join(base, name)):
                found[name] = os.path.join(base, name)
    return found


def list_presets(saved_models=None):
    """The names `VAE.from_preset` loads (a version with a `.keras` file), sorted."""
    return sorted(name for name, folder in model_folders(saved_models).items()
                  if newest(folder))


def resolve(name_or_path, saved_models=None):
    """The path of a model given by preset name or path.

    An existing path is returned as it is, a model folder as its highest version
    with a `.keras` file; a preset name becomes that version folder of its model
    folder. A missing path that is not a bare name is returned unchanged, for the
    caller's own "does not exist". Raises `checks.InputError` (one line) for an
    unknown name, listing the presets, and for a model without a `.keras` file.
    """
    path = os.fspath(name_or_path)
    if versions(path):
        return _with_keras(path, path)
    if os.path.exists(path) or not _NAME.fullmatch(path):
        return path
    folders = model_folders(saved_models)
    if path not in folders:
        where = ", ".join(search_path(saved_models)) or f"none; set {ENV_VAR}"
        raise checks.InputError(
            f"{path} is neither a file nor a preset; presets: "
            f"{', '.join(list_presets(saved_models)) or 'none'} (looked in: {where}).")
    return _with_keras(path, folders[path])


def _with_keras(name, model_dir):
    """`newest(model_dir)`, or InputError saying that no version has a .keras file."""
    found = newest(model_dir)
    if found is None:
        raise checks.InputError(
            f"{name} has no .keras file in any version of {model_dir}, so it is no "
            f"preset; its SavedModel serves tools.sample and tools.evaluate by path "
            f"({versions(model_dir)[0]}).")
    return found


def load(name_or_path, saved_models=None):
    """The trained `tfvae.VAE` of a preset name, version folder, model folder, run
    directory or `.keras` file (`VAE.from_preset`); InputError in one line."""
    # Both sit above this module: rundir resolves names through here, and keras_files
    # imports the model modules (which import this one for `VAE.from_preset`).
    from tfvae import keras_files, rundir  # noqa: PLC0415

    return keras_files.load_keras_model(rundir.keras_path(resolve(name_or_path,
                                                                 saved_models)))
