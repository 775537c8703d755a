"""The VAE in a `.keras` file, or one line saying why not.

`load_keras_model` is the one reader of a VAE's `.keras` file (`presets.load`,
`warmstart`, the tools); a file this version cannot read is refused in one line that
names its writer (`user_files.keras_writer`). The module sits above the model modules:
importing it registers every tfvae class a `.keras` file can name (`builders` imports
them all, and registers the optimizer that files of EMA runs name).
"""

import os
import zipfile

import keras

from tfvae import builders  # noqa: F401  (registers every tfvae class)
from tfvae.checks import InputError, first_line
from tfvae.user_files import keras_writer
from tfvae.version import __version__


def load_keras_model(path):
    """The tfvae VAE in the .keras file `path`; InputError if it holds none."""
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist.")
    try:
        model = keras.saving.load_model(path)
    except (zipfile.BadZipFile, ValueError, TypeError, KeyError) as error:
        writer = keras_writer(path)
        if writer:  # an intact tfvae file: another version's layout
            raise InputError(
                f"{path} cannot be read as a tfvae .keras model by tfvae {__version__}: "
                f"it was written by {writer} ({first_line(error)}); see CHANGELOG.md, "
                "0.2.0, to move it (tools.upgrade for a 0.1.0 file).") from None
        raise InputError(f"{path} cannot be read as a tfvae .keras model (cut short "
                         f"or another model: {first_line(error)}).") from None
    if not hasattr(model, "image_shape"):
        raise InputError(f"{path} holds a {type(model).__name__}, not a tfvae VAE.")
    return model

