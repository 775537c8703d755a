r"""Variance of the encoder gradient: score function (REINFORCE) vs reparameterization.

The seed notes claim that the score-function estimator of grad_phi E_q(z|x)[f(z)],
    E_q[(f(z) - b) grad_phi log q(z|x)],
has a much higher variance than the reparameterized one, E_eps[grad_phi f(mu + sigma eps)]
(Kingma & Welling 2014, sec. 2.4). This tool measures it on one model and one fixed
batch: it draws the encoder gradient of the ELBO loss `num_draws` times under each
estimator (same weights, fresh z each draw), takes each parameter's variance across the
draws, and prints the mean variance of each estimator and their ratio, over the whole
encoder and per layer. Both estimators are the model's own
(`losses.ELBO(gradient_estimator=...)`, score function with its leave-one-out baseline);
they share the closed-form KL gradient and differ in the gradient of the distortion
E_q[-log p(x|z)]. The loss is the plain ELBO (beta 1, no warm-up, free bits or InfoVAE
term), whatever the checkpoint trained on.
As a check, it also prints how far apart the two mean gradients are, next to the
distance that sampling noise alone would give.

Usage (from the repository root; ~1 minute on a 2-core CPU with the defaults):
    python -m tools.grad_variance                     # untrained 784-256-16 MLP, synthetic batch
    python -m tools.grad_variance --checkpoint=runs/mnist/vae.keras \
        --dataset=binarized_mnist --tfds_manual_dir=../shared/data/binarized_mnist
    python -m tools.grad_variance --checkpoint=vae.keras --images=batch.npy

A class-conditional checkpoint is measured on labelled images: --images with
--image_labels, a labelled --dataset, or the synthetic batch (each prototype is a
class). A hierarchy (top-down blocks) is refused in one line: the model's score-function
estimator supports one stochastic layer; so is a model conditioned on context vectors.

Bad input (a missing or unreadable checkpoint or .npy, images of another shape or
with NaN, labels that are not class ids or not one per image, a bad count) ends with
one line `tools.grad_variance: error: ...` and status 1; Ctrl-C with one line and
status 130.
"""

import collections

import numpy as np
import tensorflow as tf
from absl import app, flags

import tfvae
from tfvae import checks, cli
from tools import common

PROGRAM = "tools.grad_variance"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
ESTIMATORS = ("score_function", "reparameterization")
flags.DEFINE_string("checkpoint", None, "A trained .keras model, run directory or "
                    "preset; default: a fresh MLP VAE.")
common.define_data_flags("TFDS dataset to take the batch from (first batch of --split, "
                         "statically binarized), e.g. binarized_mnist.",
                         images="for the fixed batch")
flags.adopt_module_key_flags(common)
flags.DEFINE_integer("batch_size", 64, "Images in the fixed batch.", lower_bound=1)
flags.DEFINE_integer("num_draws", 200, "Gradient draws per estimator (a variance "
                     "needs 2).", lower_bound=2)
flags.DEFINE_integer("num_samples", 1, "Samples of z per image in each draw (L).",
                     lower_bound=1)
flags.DEFINE_integer("latent_dim", 16, "Latent size of the fresh model.", lower_bound=1)
flags.DEFINE_list("hidden_units", ["256"], "Hidden layers of the fresh MLP model.")
flags.DEFINE_integer("seed", 0, "Seeds the fresh model, the synthetic batch and the draws.")


def synthetic_batch(batch_size, image_shape=(28, 28, 1), seed=0):
    """Binary images: noisy copies (5% flipped pixels) of 10 random prototypes."""
    rng = np.random.default_rng(seed)
    prototypes = rng.random((10, *image_shape)) > 0.5
    picked = prototypes[rng.integers(0, 10, batch_size)]
    return (picked ^ (rng.random(picked.shape) < 0.05)).astype("float32")


def with_estimator(model, estimator, num_samples):
    """A copy of `model` (same weights) whose ELBO loss uses `estimator`."""
    from tfvae import builders, losses  # pylint: disable=import-outside-toplevel

    defaults = {name: builders.MODEL_DEFAULTS[name] for name in tfvae.model.OPTIONS
                if name not in builders.CONTEXT_ARGUMENTS}  # the model's own context
    config = {**model.get_config(), **defaults, "num_samples": num_samples,
              "loss": losses.ELBO(gradient_estimator=estimator)}
    copy = tfvae.VAE.from_config(config)
    copy.set_weights(model.get_weights())
    return copy


class RunningMoments:
    """Per-parameter mean and variance over draws (Welford's update, float64)."""

    def __init__(self):
        self.count, self.mean, self.m2 = 0, None, None

    def update(self, values):
        values = np.asarray(values, np.float64)
        if self.mean is None:
            self.mean, self.m2 = np.zeros_like(values), np.zeros_like(values)
        self.count += 1
        delta = values - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (values - self.mean)

    @property
    def variance(self):
        return self.m2 / max(self.count - 1, 1)


def encoder_gradient_moments(model, images, num_draws):
    """{variable path: RunningMoments} of the encoder gradient of the model's loss;
    `images` are a conditional model's inputs {"images", "labels"} for one."""
    variables = model.encoder.trainable_variables
    images = tf.nest.map_structure(tf.convert_to_tensor, images)

    @tf.function
    def draw():
        with tf.GradientTape() as tape:
            loss = model.compute_loss(images, None, model(images, training=True))
        return tape.gradient(loss, variables)

    moments = {v.path: RunningMoments() for v in variables}
    for _ in range(num_draws):
        for variable, grad in zip(variables, draw()):
            moments[variable.path].update(grad.numpy())
    return moments


def layer_of(path):
    """'mlp_encoder/hidden_0/kernel' -> 'hidden_0'."""
    parts = path.split("/")
    return parts[-2] if len(parts) >= 2 else path


def estimator_copies(model, num_samples=1):
    """{estimator: a copy of `model` with it}; ValueError (the model's own words) where
    the model cannot use both, e.g. the score function on a hierarchy."""
    return {name: with_estimator(model, name, num_samples) for name in ESTIMATORS}


def compare_estimators(model, images, num_draws, num_samples=1, copies=None):
    """Mean per-parameter gradient variance of each estimator, overall and per layer.

    Returns {"overall" or layer name: {"score_function": v, "reparameterization": v,
    "ratio": v_score / v_reparam, "num_params": n}} and, under "mean_check", the
    relative distance between the two mean gradients and its sampling-noise level.
    """
    copies = copies or estimator_copies(model, num_samples)
    moments = {name: encoder_gradient_moments(copies[name], images, num_draws)
               for name in ESTIMATORS}
    paths = list(moments[ESTIMATORS[0]])
    groups = collections.OrderedDict(overall=paths)
    for path in paths:
        groups.setdefault(layer_of(path), []).append(path)
    results = {}
    for group, members in groups.items():
        row = {"num_params": int(sum(moments[ESTIMATORS[0]][p].mean.size
                                     for p in members))}
        for name in ESTIMATORS:
            row[name] = float(np.concatenate(
                [moments[name][p].variance.ravel() for p in members]).mean())
        row["ratio"] = row["score_function"] / row["reparameterization"]
        results[group] = row
    flat = {name: [np.concatenate([getattr(moments[name][p], stat).ravel()
                                   for p in paths]) for stat in ("mean", "variance")]
            for name in ESTIMATORS}
    (mean_s, var_s), (mean_r, var_r) = flat["score_function"], flat["reparameterization"]
    norm = np.linalg.norm(mean_r)
    results["mean_check"] = {
        "relative_difference": float(np.linalg.norm(mean_s - mean_r) / norm),
        "noise_level": float(np.sqrt(np.sum(var_s + var_r) / num_draws) / norm),
    }
    return results


def format_results(results):
    lines = [f"{'':18s}{'params':>9s}{'var score':>13s}{'var reparam':>13s}{'ratio':>10s}"]
    for group, row in results.items():
        if group == "mean_check":
            continue
        lines.append(f"{group:18s}{row['num_params']:9d}{row['score_function']:13.4e}"
                     f"{row['reparameterization']:13.4e}{row['ratio']:10.1f}")
    check = results["mean_check"]
    lines.append(f"|mean score - mean reparam| / |mean reparam| = "
                 f"{check['relative_difference']:.3f} (sampling noise alone: "
                 f"~{check['noise_level']:.3f})")
    return "\n".join(lines)


def load_batch(image_shape, num_classes=0):
    """The fixed batch [B, H, W, C] in [0, 1], by the rules of `tfvae.checks`; for a
    class-conditional model {"images", "labels"}: --image_labels, the labels of
    --dataset, or (synthetic batch) the prototype of each image modulo the classes."""
    if FLAGS.image_labels and not num_classes:
        raise checks.InputError("--image_labels are the labels of --images, for a "
                                "class-conditional --checkpoint.")
    if FLAGS.images:
        images, labels = common.npy_images(image_shape, FLAGS.batch_size, num_classes)
        return {"images": images, "labels": labels} if num_classes else images
    if FLAGS.dataset:
        batch, _ = common.split_images(
            FLAGS.dataset, FLAGS.split, image_shape, FLAGS.batch_size, FLAGS.batch_size,
            bool(num_classes), num_classes or None, binarize="static",
            data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir)
        return batch
    if not num_classes:
        return synthetic_batch(FLAGS.batch_size, image_shape, FLAGS.seed)
    rng = np.random.default_rng(FLAGS.seed)
    prototypes = rng.random((num_classes, *image_shape)) > 0.5
    labels = rng.integers(0, num_classes, FLAGS.batch_size)
    images = prototypes[labels] ^ (rng.random((len(labels), *image_shape)) < 0.05)
    return {"images": images.astype("float32"), "labels": labels.astype("int32")}


def load_model():
    """(model, its description): --checkpoint, else a fresh MLP VAE."""
    if FLAGS.checkpoint:
        return common.load_keras(FLAGS.checkpoint)[0], FLAGS.checkpoint
    try:
        hidden = tuple(int(u) for u in FLAGS.hidden_units)
    except ValueError:
        hidden = (0,)
    if any(units < 1 for units in hidden):
        raise checks.InputError(f"--hidden_units must be positive integers, got "
                                f"{','.join(FLAGS.hidden_units)!r}.")
    model = tfvae.VAE(tfvae.MLPEncoder(FLAGS.latent_dim, hidden),
                      tfvae.MLPDecoder((28, 28, 1), hidden))
    return model, (f"untrained MLP VAE 784-{'-'.join(map(str, hidden))}-"
                   f"{FLAGS.latent_dim}")


@cli.interruptible(PROGRAM, "nothing was written.", smaller="lower --batch_size")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    import keras  # pylint: disable=import-outside-toplevel
    from tfvae import data  # pylint: disable=import-outside-toplevel

    keras.utils.set_random_seed(FLAGS.seed)
    try:
        model, source = load_model()
        if model.context_dim and not model.num_classes:
            raise checks.InputError(
                f"{source} conditions on context vectors; this tool compares the "
                "estimators on unconditional and class-conditional models.")
        try:
            copies = estimator_copies(model, FLAGS.num_samples)
        except ValueError as error:  # the model's own words, e.g. a hierarchy
            raise checks.InputError(
                f"{source} cannot take both estimators ({checks.first_line(error)}); "
                "this tool compares them on models of one stochastic layer.") from None
        images = load_batch(model.image_shape, model.num_classes)
    except (ValueError, OSError, data.DataUnavailableError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    count = len(images["images"] if isinstance(images, dict) else images)
    print(f"{source}; batch {count} images "
          f"({FLAGS.images or FLAGS.dataset or 'synthetic'}); {FLAGS.num_draws} draws "
          f"per estimator, L={FLAGS.num_samples}", flush=True)
    results = compare_estimators(model, images, FLAGS.num_draws, FLAGS.num_samples,
                                 copies)
    print(format_results(results))


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
