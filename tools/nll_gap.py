r"""What conditioning on the label buys: -log p(x) - (-log p(x|y)) on the same images.

    python -m tools.nll_gap runs/fashion_mnist_cvae runs/fashion_mnist_vae \
        --num_samples=5000 --output=gap.json

CONDITIONAL is a class-conditional model and UNCONDITIONAL a model of the same images
(`.keras` files, run directories or preset names; the data options default to CONDITIONAL's
config.json, as in tools.evaluate). On every image x of --split, with label y, both
give importance-sampled estimates with k = --num_samples (`tfvae.evaluate`), and the
tool prints the mean paired difference

    gap = E_x[log p(x|y) - log p(x)]     (nats per image, +- its standard error).

For two perfect models the gap is the mutual information I(x; y) <= H(y) <= log K
(K classes; log 10 = 2.30 nats). Two trained models only approach their optima, so
their gap can leave [0, H(y)]. The conditional model also has a gap of its own that
cannot exceed H(y): with its label marginal p(x) = sum_y' p(y') p(x|y') (p(y') the
class frequencies of --split),

    gap_self = E_x[log p(x|y) - log sum_y' p(y') p(x|y')] = E_x[log p(y|x) - log p(y)],

H(y) minus the cross-entropy of the model used as a classifier, p(y|x) being Bayes'
rule on its likelihoods; the tool prints it (with k = --marginal_samples per class,
K times the work) and that classifier's accuracy.

Bad input ends with one line `tools.nll_gap: error: ...` and status 1.
"""

import time

from absl import app, flags

from tfvae import checks, cli, user_files
from tools import common
# The data and sampling flags are tools.evaluate's own (--split, --num_samples,
# --batch_size, --output, --dataset, --binarization, --seed, --num_images, ...), and so
# is the loading of the images: both tools read the same test images the same way.
from tools import evaluate as evaluate_tool

PROGRAM = "tools.nll_gap"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)
flags.DEFINE_integer("marginal_samples", 100, "k of each class's log p(x|y') in the "
                     "conditional model's label marginal (0 skips gap_self).",
                     lower_bound=0)


def mean_and_stderr(values):
    import numpy as np
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1) / np.sqrt(len(values)))


def log_px(model, inputs, num_samples):
    from tfvae import evaluate
    return evaluate.importance_sampled_log_px(model, inputs, num_samples,
                                              FLAGS.batch_size, verbose=0).values


def label_marginal(model, images, labels):
    """(per image log p(y|x) - log p(y) under the model, its classifier's accuracy)."""
    import numpy as np

    counts = np.bincount(labels, minlength=model.num_classes)
    log_prior = np.log(np.maximum(counts, 1) / counts.sum())
    log_joint = np.stack([log_px(model, {"images": images, "labels": np.full_like(
        labels, c)}, FLAGS.marginal_samples) for c in range(model.num_classes)],
        axis=1) + log_prior
    top = log_joint.max(axis=1, keepdims=True)
    log_marginal = top[:, 0] + np.log(np.exp(log_joint - top).sum(axis=1))
    rows = np.arange(len(labels))
    gap = log_joint[rows, labels] - log_marginal - log_prior[labels]
    return gap, float(np.mean(np.argmax(log_joint, axis=1) == labels))


def load_models(conditional_path, unconditional_path):
    (conditional, location), (unconditional, _) = (
        common.load_keras(path) for path in (conditional_path, unconditional_path))
    config = location["config"]
    if not conditional.num_classes or unconditional.context_width:
        raise checks.InputError("give a class-conditional model, then an unconditional "
                                "one.")
    if conditional.image_shape != unconditional.image_shape:
        raise checks.InputError(f"the models are of {conditional.image_shape} and "
                                f"{unconditional.image_shape} images.")
    return conditional, unconditional, config


@cli.interruptible(PROGRAM, "nothing was written.")
def main(argv):
    cli.start_tool(PROGRAM, argv, 2,
                   "python -m tools.nll_gap CONDITIONAL UNCONDITIONAL")
    from tfvae import data, rundir

    try:
        user_files.check_writable(FLAGS.output)
        conditional, unconditional, config = load_models(argv[1], argv[2])
        inputs, description = evaluate_tool.load_images(
            config, conditional.image_shape, conditional.num_classes)
        if conditional.decoder.likelihood == "bernoulli":
            checks.check_binary(inputs["images"], description)
    except (ValueError, OSError, data.DataUnavailableError) as error:
        cli.fail(PROGRAM, error)
    start = time.perf_counter()
    given_label = log_px(conditional, inputs, FLAGS.num_samples)
    alone = log_px(unconditional, inputs["images"], FLAGS.num_samples)
    gap, gap_stderr = mean_and_stderr(given_label - alone)
    report = {"data": description, "num_images": len(alone), "k": FLAGS.num_samples,
              "gap": gap, "gap_stderr": gap_stderr}
    for name, values in (("nll_conditional", -given_label), ("nll_unconditional", -alone)):
        report[name], report[f"{name}_stderr"] = mean_and_stderr(values)
    print(f"{description}, {len(alone)} images, k={FLAGS.num_samples}")
    print(f"-log p(x|y) {report['nll_conditional']:.3f} +- "
          f"{report['nll_conditional_stderr']:.3f}, -log p(x) "
          f"{report['nll_unconditional']:.3f} +- {report['nll_unconditional_stderr']:.3f}")
    print(f"gap E[log p(x|y) - log p(x)]: {gap:.3f} +- {gap_stderr:.3f} nats")
    if FLAGS.marginal_samples:
        own, accuracy = label_marginal(conditional, inputs["images"], inputs["labels"])
        report.update(zip(("gap_self", "gap_self_stderr"), mean_and_stderr(own)),
                      marginal_samples=FLAGS.marginal_samples,
                      classifier_accuracy=accuracy)
        print(f"gap_self E[log p(y|x) - log p(y)]: {report['gap_self']:.3f} +- "
              f"{report['gap_self_stderr']:.3f} nats (k={FLAGS.marginal_samples} per "
              f"class); the model as a classifier: accuracy {accuracy:.4f}")
    report.update(seconds=time.perf_counter() - start, machine=rundir.machine_info(),
                  models=argv[1:], date=time.strftime("%Y-%m-%d %H:%M:%S"))
    if FLAGS.output:
        user_files.write_json(FLAGS.output, report)
        print("report:", FLAGS.output)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
