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

Reading the user's files is `tfvae.user_files` (and `tfvae.keras_files` for models); the
command lines' one-line errors are `tfvae.cli`. This module needs only numpy and
imports nothing of the package, so that every module can use it and the LiteRT path of
`tools.sample` runs where TensorFlow is not installed.
"""

import math

import numpy as np

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


# -- messages (the first two shared with the SavedModel's run-time checks) -------------

def shape_message(name, shape):
    """'images must have shape [batch, 28, 28, 1]'."""
    return f"{name} must have shape [batch, {', '.join(map(str, shape))}]"


def count_message(name="num_samples", maximum=None):
    """'num_samples must be a positive integer (at most 10000)'."""
    bound = f" (at most {maximum})" if maximum else ""
    return f"{name} must be a positive integer{bound}"


def first_line(error):
    """The first line of an exception's message (its type's name if it has none)."""
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


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


def _as_float(value):
    """`value` as a float, NaN where it is not a number (so every range test fails)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def check_positive(value, name):
    """`value` as a float > 0 (finite); InputError naming `name` otherwise."""
    number = _as_float(value)
    if not (0 < number < math.inf):
        raise InputError(f"{name} must be a positive number, got {value!r}.")
    return number


def check_guidance_value(value, name="guidance"):
    """Guidance weights (`tfvae.guidance`) as floats >= 0 (finite): (w for the codes,
    w for the image) of one number w, (w, 0), or of a pair; InputError naming `name`
    otherwise."""
    pair = isinstance(value, (list, tuple))
    numbers = tuple(_as_float(v) for v in (value if pair else (value, 0.0)))
    if len(numbers) != 2 or not all(0 <= number < math.inf for number in numbers):
        shown = ",".join(str(v) for v in value) if pair else repr(value)
        raise InputError(f"{name} must be a number >= 0 (0: no guidance), or two (the "
                         f"codes', the image's), got {shown or 'nothing'}.")
    return numbers


def layer_temperatures(temperature, num_layers, name="temperature"):
    """One positive temperature per stochastic layer, top first: `temperature` is one
    number for every layer or a sequence of `num_layers` (VDVAE samples with such a
    list: a cool top layer picks typical global structure, the layers below keep
    their detail). InputError naming `name` otherwise."""
    values = temperature if isinstance(temperature, (list, tuple)) else \
        [temperature] * num_layers
    if len(values) != num_layers:
        raise InputError(f"{name} gives {len(values)} temperatures; this model has "
                         f"{num_layers} stochastic layers (one number, or one each).")
    return tuple(check_positive(value, name) for value in values)


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


def is_binary(images):
    """Whether every pixel of `images` is 0 or 1."""
    return bool(np.all((images == 0) | (images == 1)))


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

