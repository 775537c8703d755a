"""What tfvae accepts from a user, and the one line it says when it does not.

The trainer (`data.check_images`), the tools (`tools.*`), the eager calls of a `VAE`
and the signatures of an exported SavedModel (`export._check_*`) apply the rules below
with the same words, so a mistake reads the same wherever it is made.

Images, for a model of images (H, W, C):
* an array [N, H, W, C], or [N, H, W] when C = 1; N >= 1;
* floats in [0, 1], or integers 0-255 (divided by 255; integers that are all 0 or 1
  are taken as binary images);
* no NaN and no Inf;
* for a Bernoulli likelihood, binary pixels (0 or 1): on grey levels g, the Bernoulli
  "log-likelihood" sum g log p + (1 - g) log(1 - p) is a cross-entropy, not the log of a
  probability of the data, so `tools.evaluate` refuses them unless told
  `--allow_grey_levels`.

Codes z, for a model of latent size D (all layers, top first): an array [N, D] of
numbers, N >= 1, no NaN and no Inf.

Labels, for a model conditioned on K classes: integer class ids 0..K-1, one per image
(or per sample). Contexts, for a model conditioned on vectors of size C: finite
numbers [N, C].

Counts: `num_samples` of the `sample` signature (and of `tools.sample`, SavedModel or
.tflite) is 1 to MAX_SAMPLES; the k of `log_prob` is any positive integer (it is
decoded in bounded chunks).

Command lines: bad input ends with the one line 'program: error: ...' and status 1
(`fail`), Ctrl-C with 'program: interrupted; <what was kept>' and status 130
(`interruptible`).

This module needs only numpy and absl (no TensorFlow; `load_keras_model` imports Keras
when called), so that the LiteRT path of `tools.sample` runs where TensorFlow is not
installed.
"""

import functools
import json
import os
import pickle
import signal
import sys
import zipfile

import numpy as np
from absl import flags, logging

from tfvae.version import __version__

# Most images one `sample` call draws. Memory grows linearly: 10**6 MNIST samples took
# 7.9 GB in the SavedModel; 10**4 take about 80 MB (a 100 x 100 grid of 28 x 28 images),
# more than a grid or a serving batch needs. Larger sets: call it repeatedly.
MAX_SAMPLES = 10_000
RANGE = "images must be float32 in [0, 1]"
FINITE_CODES = "z must be finite numbers"
FINITE_CONTEXT = "context must be finite numbers"


def labels_rule(num_classes):
    """'labels must be integer class ids in 0..9'."""
    return f"labels must be integer class ids in 0..{int(num_classes) - 1}"


class InputError(ValueError):
    """Bad input from a user; the message is one line that says what to do."""


# -- messages shared with the SavedModel's run-time checks -----------------------------

def shape_message(name, shape):
    """'images must have shape [batch, 28, 28, 1]'."""
    return f"{name} must have shape [batch, {', '.join(map(str, shape))}]"


def count_message(name="num_samples", maximum=None):
    """'num_samples must be a positive integer (at most 10000)'."""
    bound = f" (at most {maximum})" if maximum else ""
    return f"{name} must be a positive integer{bound}"


# -- choices and counts -------------------------------------------------------------------

def choice(name, value, choices):
    """`value` if it is one of `choices`; else InputError naming them. The one check of
    every option with a fixed set of values (the trainer's flags list the same tuples)."""
    if value not in choices:
        raise InputError(f"Unknown {name} {value!r}; expected one of "
                         f"{', '.join(map(str, choices))}.")
    return value


def check_count(value, name="num_samples", maximum=None):
    """`value` as an int in [1, maximum]; InputError with `count_message` otherwise."""
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = None
    if count is None or count != value or count < 1 or (maximum and count > maximum):
        raise InputError(f"{count_message(name, maximum)}, got {value!r}.")
    return count


def count_flag(name, default, help_text, maximum=None):
    """An absl integer flag checked by `check_count` at parse time."""
    flags.DEFINE_integer(name, default, help_text)
    flags.register_validator(name, lambda v: _is_count(v, maximum),
                             message=f"{count_message('--' + name, maximum)}.")


def _is_count(value, maximum):
    try:
        check_count(value, maximum=maximum)
    except InputError:
        return False
    return True


# -- images -----------------------------------------------------------------------------

def as_images(array, image_shape, what="the images"):
    """float32 images [N, H, W, C] in [0, 1] from `array`, by the rules above.

    Raises InputError naming `what` (e.g. the file) and the rule it breaks.
    """
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    integer = np.issubdtype(array.dtype, np.integer)
    if not (integer or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{what} has dtype {array.dtype}; expected floats in [0, 1] or "
                         "integers 0-255.")
    image_shape = tuple(int(d) for d in image_shape)
    if array.ndim == 3 and image_shape[-1] == 1:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != image_shape:
        raise InputError(f"{what} has shape {tuple(np.shape(array))}; "
                         f"{shape_message('images', image_shape)} (the model's).")
    if not len(array):
        raise InputError(f"{what} holds no images.")
    if integer:
        low, high = array.min(), array.max()
        if low < 0 or high > 255:
            raise InputError(f"{what} has integer values in [{low}, {high}]; expected "
                             "0-255 (or floats in [0, 1]).")
        return array.astype(np.float32) / (255.0 if high > 1 else 1.0)
    array = array.astype(np.float32)
    check_values(array, what)
    return array


def check_values(images, what="the images"):
    """InputError unless every value of `images` is a number in [0, 1]."""
    images = np.asarray(images)
    check_finite(images, what)
    low, high = images.min(), images.max()
    if low < 0 or high > 1:
        hint = " (divide 0-255 images by 255)" if high > 1 else ""
        raise InputError(f"{what} has pixel values in [{float(low)}, {float(high)}]; "
                         f"{RANGE}{hint}.")


def check_finite(array, what="the images", rule=RANGE, item="image"):
    """InputError naming the first NaN or Inf of `array` (its `item` along axis 0)."""
    array = np.asarray(array)
    for bad, kind in ((np.isnan, "NaN"), (np.isinf, "infinite values")):
        found = bad(array)
        if found.any():
            first = np.unravel_index(np.argmax(found), array.shape)[0]
            raise InputError(f"{what} has {kind} (first in {item} {first}); {rule}.")


def check_labels(labels, num_classes, what="labels"):
    """InputError unless `labels` are integer class ids in 0..num_classes-1."""
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"{what} are {labels.dtype}; {labels_rule(num_classes)}.")
    outside = (labels < 0) | (labels >= num_classes)
    if outside.any():
        first = int(np.argmax(outside.reshape(-1)))
        raise InputError(f"{what} hold {labels.reshape(-1)[first]} (entry {first}); "
                         f"{labels_rule(num_classes)}.")


def as_labels(labels, num_classes, count, what="labels"):
    """int32 class ids [count] from one id or `count` of them (`check_labels`)."""
    labels = np.asarray(labels).reshape(-1)
    check_labels(labels, num_classes, what)
    if len(labels) not in (1, count):
        raise InputError(f"{what} has {len(labels)} entries for {count} images or "
                         "samples; give one per image or sample, or one for all.")
    return np.broadcast_to(labels, (count,)).astype(np.int32)


def check_binary(images, what="the images", flag="--allow_grey_levels"):
    """InputError when `images` (in [0, 1]) hold grey levels, for a Bernoulli model."""
    grey = (images > 0) & (images < 1)
    if grey.any():
        raise InputError(
            f"{what} has grey levels ({grey.mean():.0%} of the pixels strictly between 0 "
            "and 1) but the model's likelihood is Bernoulli, defined on binary pixels: "
            "its log p(x) of them is a cross-entropy, not a log-likelihood. Binarize "
            f"them, or pass {flag} to report the cross-entropy anyway.")


# -- codes ------------------------------------------------------------------------------

def as_codes(array, latent_dim, what="the codes"):
    """float32 codes z [N, latent_dim] from `array`, by the rules above; InputError
    naming `what` otherwise (LiteRT would crash on another width, decode NaN to NaN)."""
    array = np.asarray(array)
    if not (np.issubdtype(array.dtype, np.integer)
            or np.issubdtype(array.dtype, np.floating)):
        raise InputError(f"{what} has dtype {array.dtype}; {FINITE_CODES}.")
    if array.ndim != 2 or array.shape[1] != latent_dim:
        raise InputError(f"{what} has shape {array.shape}; "
                         f"{shape_message('z', (latent_dim,))} (the model's codes, all "
                         "layers top first).")
    if not len(array):
        raise InputError(f"{what} holds no codes.")
    array = array.astype(np.float32)
    check_finite(array, what, FINITE_CODES, "code")
    return array


# -- files ------------------------------------------------------------------------------

def first_line(error):
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_npy(path):
    """The array in the .npy file `path`; InputError if it is missing or unreadable."""
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist.") from None
    except (OSError, ValueError, EOFError, pickle.UnpicklingError) as error:
        raise InputError(f"{path} cannot be read as a .npy array "
                         f"(cut short or another format: {first_line(error)}).") from None


def load_keras_model(path):
    """The tfvae VAE in the .keras file `path`; InputError if it holds none."""
    if not os.path.isfile(path):
        raise InputError(f"{path} does not exist.")
    import keras

    import tfvae  # noqa: F401  (registers the tfvae classes)

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


def keras_writer(path):
    """Which tfvae wrote the .keras file `path`, in words: "tfvae 0.2.0" from the
    version its VAE config records (since 0.2.0), else "tfvae before 0.2.0 (no
    version recorded; saved <date>)". None when `path` is not an intact .keras
    archive of a tfvae model."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            saved = json.loads(archive.read("metadata.json")).get("date_saved", "?")
    except (OSError, zipfile.BadZipFile, KeyError, ValueError):
        return None
    if not (isinstance(config, dict) and str(config.get("module")).startswith("tfvae")):
        return None
    version = (config.get("config") or {}).get("tfvae_version")
    if version:
        return f"tfvae {version}"
    return f"tfvae before 0.2.0 (no version recorded; saved {saved})"


def check_writable(path, flag="--output"):
    """InputError now, not after a long computation, when `path` cannot be written."""
    if not path:
        return
    folder = os.path.dirname(path) or "."
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise InputError(f"{flag} {path} cannot be written "
                         f"({first_line(error)}).") from None
    if not os.access(folder, os.W_OK) or os.path.isdir(path):
        raise InputError(f"{flag} {path} cannot be written.")


# -- command lines ----------------------------------------------------------------------

def start_tool(program, argv, arguments=0, usage=None):
    """The opening every tool's `main` shares. `argv` (the program, then its positional
    arguments) must hold `arguments` of them, a count or a (fewest, most) pair, else one
    line (`usage` when given, the unexpected arguments otherwise) and status 1. absl
    logs at WARNING unless --verbosity was given: a tool prints its results, not
    TensorFlow's INFO lines."""
    fewest, most = (arguments, arguments) if isinstance(arguments, int) else arguments
    if not fewest <= len(argv) - 1 <= most:
        fail(program, f"usage: {usage}" if usage
             else f"unexpected arguments: {' '.join(argv[1 + most:])}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def fail(program, message):
    """Exits with status 1 and the line 'program: error: message'."""
    sys.exit(f"{program}: error: {message}")


def flag_error(error):
    """absl's message for a bad flag or flagfile, in one line."""
    return str(error).splitlines()[0].removeprefix("ERROR:: ")


# absl's help flags (`app.define_help_flags`), which exit with status 1 after the help.
HELP_FLAGS = ("help", "helpshort", "helpfull", "helpxml", "?", "h")


def flags_parser(program):
    """An absl `flags_parser` for `app.run` that reports a bad flag in one line and
    exits with status 0 after the help that was asked for."""

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:
            fail(program, flag_error(error))
        except SystemExit as done:
            asked = any(arg.split("=")[0].lstrip("-") in HELP_FLAGS for arg in argv[1:])
            sys.exit(0 if asked and done.code == 1 else done.code)

    return parse


def interruptible(program, kept):
    """Decorates a tool's `main`: Ctrl-C (SIGINT) ends it with status 130 (128 +
    SIGINT, as shells report it) and the line 'program: interrupted; <kept>', where
    `kept` says what was written, not a traceback.

    Whatever a SIGINT ends in counts: TensorFlow can turn the KeyboardInterrupt raised
    inside its Python code into another error (seen: a ValueError from a tf.function
    call whose argument list the interrupt cut short).
    """

    def decorate(main):
        @functools.wraps(main)
        def run(argv):
            interrupted = []

            def on_sigint(signum, frame):
                interrupted.append(signum)
                raise KeyboardInterrupt

            ours = signal.getsignal(signal.SIGINT) is signal.default_int_handler
            if ours:  # not where SIGINT is ignored (nohup, `&`) or handled already
                signal.signal(signal.SIGINT, on_sigint)
            try:
                return main(argv)
            except BaseException as error:
                if not (interrupted or isinstance(error, KeyboardInterrupt)):
                    raise
                print(f"{program}: interrupted; {kept}", file=sys.stderr, flush=True)
                sys.exit(130)
            finally:
                if ours:
                    signal.signal(signal.SIGINT, signal.default_int_handler)

        return run

    return decorate
