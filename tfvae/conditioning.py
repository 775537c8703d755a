"""The context c of a conditional VAE (Sohn et al. 2015), as the networks see it.

A class-conditional model (num_classes K) takes labels y in 0..K-1 and sees their
one-hot vectors, c = e_y [B, K]: a first Dense layer W [x, c] = W_x x + W_c e_y then
adds a learned vector per class (an embedding). A model of context vectors
(context_dim C) takes any finite c [B, C] as it is. Either way c joins, by
concatenation, the encoder's flattened input, each top-down state's input and the
decoder's input (`join`); the inputs of such a model are dicts,
{"images": x, "labels": y} or {"images": x, "context": c}.
"""

import tensorflow as tf

from tfvae import checks


class Conditioning:
    """What a model is conditioned on: `num_classes` labels or `context_dim` vectors
    (both 0: nothing)."""

    def __init__(self, num_classes=0, context_dim=0):
        self.num_classes, self.context_dim = int(num_classes), int(context_dim)
        if self.num_classes < 0 or self.context_dim < 0 or (
                self.num_classes and self.context_dim):
            raise ValueError("Give num_classes (labels) or context_dim (vectors), not "
                             "both, and neither negative.")

    @property
    def width(self):
        """Size C of the context vector; 0 for an unconditional model."""
        return self.num_classes or self.context_dim

    @property
    def key(self):
        """The inputs' key of the context: "labels", "context" or None."""
        return "labels" if self.num_classes else "context" if self.context_dim else None

    def example(self):
        """What a user passes, for messages: {'images': x, 'labels': y}."""
        return f"{{'images': x, '{self.key}': {'y' if self.num_classes else 'c'}}}"

    def tensor(self, value, batch=None):
        """The context [B, C] float32 of labels [B] or vectors [B, C], checked (the
        values too, when eager); `batch`: the number of rows it must have."""
        value = tf.convert_to_tensor(value)
        if self.num_classes:
            if not value.dtype.is_integer:
                raise ValueError(f"labels must be integer class ids, got {value.dtype.name}.")
            if value.shape.rank != 1:
                raise ValueError(f"labels must have shape (batch,), got {tuple(value.shape)}.")
            if tf.executing_eagerly():
                checks.check_labels(value.numpy(), self.num_classes)
            context = tf.one_hot(value, self.num_classes)
        else:
            context = tf.cast(value, tf.float32)
            if context.shape.rank != 2 or context.shape[-1] != self.context_dim:
                raise ValueError(f"context must have shape (batch, {self.context_dim}), "
                                 f"got {tuple(value.shape)}.")
            if tf.executing_eagerly():
                checks.check_finite(context.numpy(), "the context",
                                    checks.FINITE_CONTEXT, "row")
        if batch is not None and tf.executing_eagerly() and int(
                tf.shape(context)[0]) != int(batch):
            raise ValueError(f"{tf.shape(context)[0]} {self.key} for {batch} images.")
        return context

    def dropped(self, context, rate):
        """The context [B, C] with each row replaced by the null context, zeros (no
        class: one-hot of none), with probability `rate`: the training of
        classifier-free guidance (Ho & Salimans 2022), which then has one model of
        p(x|y) and of p(x) (`guidance.py`)."""
        keep = tf.random.uniform(tf.shape(context)[:1]) >= rate
        return context * tf.cast(keep, context.dtype)[:, None]

    def given(self, labels, count):
        """The context [count, C] for `count` samples or codes from class ids [count]
        or one id, vectors [count, C] or one [C]; None for an unconditional model,
        which refuses labels."""
        if not self.width:
            if labels is not None:
                raise ValueError("This VAE is unconditional; it takes no labels.")
            return None
        if labels is None:
            raise ValueError(f"This VAE is conditional: give {self.key}= "
                             f"({'class ids' if self.num_classes else 'vectors'}).")
        labels = tf.convert_to_tensor(labels)
        if labels.shape.rank == (0 if self.num_classes else 1):
            labels = tf.broadcast_to(labels, tf.concat(
                [tf.reshape(count, [1]), tf.shape(labels)], axis=0))
        return self.tensor(labels, count)


def concat(tensors):
    """Tensors joined along the last axis in float32: the one place where codes
    (float32) meet features of a mixed-precision policy (bfloat16 or float16); the
    next layer casts back to its compute dtype."""
    return tf.concat([tf.cast(t, tf.float32) for t in tensors], axis=-1)


def join(inputs, context):
    """[inputs, context] along the last axis, the context [B, C] broadcast to the
    leading axes of inputs [..., B, F]; inputs alone without a context."""
    if context is None:
        return inputs
    shape = tf.concat([tf.shape(inputs)[:-1], tf.shape(context)[-1:]], axis=0)
    return concat([inputs, tf.broadcast_to(context, shape)])
