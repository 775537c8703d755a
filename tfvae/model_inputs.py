"""What a `VAE` accepts as input, checked before TensorFlow sees it.

Images are float32 [B, H, W, C] in [0, 1]; integers 0-255 are divided by 255 unless
all are 0 or 1 (binary images), by `checks.as_images` for numpy arrays and by
`data.integer_images` per batch in a graph. A conditional model takes a dict,
{"images": x, "labels": y} (or "context": c), never (x, y) as inputs and targets.
Numpy arrays are checked whole before any tracing; a `tf.data.Dataset` has its spec
checked up front and its values batch by batch as they are read (reading one batch
up front could cut a cached pipeline short), and a bad batch's TensorFlow error comes
out as its one line (`one_line_data_errors`). Traced calls (`fit`, the export) stay
graph-pure: the trainer checks its data first (`data.check_images`), the export's
signatures check at run time (`export._check_images`).
"""

import contextlib

import numpy as np
import tensorflow as tf

from tfvae import checks, data


@contextlib.contextmanager
def one_line_data_errors():
    """A dataset batch that fails `data.checked_values` surfaces from TensorFlow as an
    InvalidArgumentError with a traceback: raise its one line as a ValueError."""
    try:
        yield
    except tf.errors.InvalidArgumentError as error:
        line = data.value_check_error(error)
        if line is None:
            raise
        raise line from None


def images_tensor(images, image_shape):
    """`images` as a float32 tensor after checking dtype and shape, and NaN or Inf when
    eager (module docstring)."""
    images = tf.convert_to_tensor(images)
    if images.dtype.is_integer and tf.executing_eagerly():
        images = tf.constant(checks.as_images(images.numpy(), image_shape))
    elif images.dtype.is_integer:
        images = data.integer_images(images)
    elif images.dtype != tf.float32:
        if not images.dtype.is_floating:
            raise ValueError(f"VAE expects float32 images in [0, 1], got {images.dtype}.")
        images = tf.cast(images, tf.float32)
    shape = tuple(images.shape)
    if len(shape) != 4 or any(got is not None and got != want
                              for got, want in zip(shape[1:], image_shape)):
        raise ValueError(f"VAE expects images of shape (batch, "
                         f"{', '.join(map(str, image_shape))}), got {shape}.")
    if tf.executing_eagerly():
        checks.check_finite(images.numpy())
    return images


def refuse_missing_context(model):
    raise ValueError(f"This VAE is conditional: pass {model.conditioning.example()}"
                     " (a dict) instead of images alone.")


def refuse_targets(model, x, y):
    """One clear line for fit(x, y) / evaluate(x, y) of a conditional model (before
    any tracing, which a failure would leave half done)."""
    spec = getattr(x, "element_spec", None)
    if model.context_width and (y is not None or (
            isinstance(spec, tuple) and len(spec) > 1)):
        raise ValueError(
            f"A conditional VAE takes its {model.context_key} in the inputs, not as "
            f"targets: fit it on {model.conditioning.example()} (a dict, or a "
            "tf.data.Dataset of such dicts), not on (x, y).")


def checked(model, x, what="x"):
    """`x` as `model` takes it: numpy images (alone or a dict's "images") by the rules
    of `checks.as_images`, a conditional model's labels (`checks.as_labels`) or
    context checked against them; a `tf.data.Dataset` checked as the module docstring
    says; tensors unchanged."""
    if isinstance(x, tf.data.Dataset):
        what = f"the dataset given as {what}"
        data.check_image_spec(x, model.image_shape, what, integers=True)
        # Pixels in [0, 1] for Bernoulli and discretized (8-bit) likelihoods.
        unit = getattr(model.decoder, "likelihood", "bernoulli") != "gaussian"
        return data.checked_values(x, what, unit_range=unit)
    inputs = x if isinstance(x, dict) else {"images": x}
    if not isinstance(inputs.get("images"), np.ndarray):
        return x
    name = f"{what}['images']" if isinstance(x, dict) else what
    inputs = {**inputs, "images": checks.as_images(inputs["images"], model.image_shape,
                                                   name)}
    if not model.context_width:
        return inputs["images"] if not isinstance(x, dict) else inputs
    if model.context_key not in inputs:
        refuse_missing_context(model)
    count, context = len(inputs["images"]), inputs[model.context_key]
    if model.num_classes:
        inputs["labels"] = checks.as_labels(context, model.num_classes, count,
                                            f"{what}['labels']")
    else:
        model.conditioning.tensor(context, count)
    return inputs
