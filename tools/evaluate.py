r"""Evaluate a trained VAE: test NLL (k importance samples), ELBO, active units.

    python -m tools.evaluate runs/mnist/model.keras --num_samples=5000 \
        --output=runs/mnist/nll.json
    python -m tools.evaluate saved_models/vae_binarized_mnist/1 --num_samples=5000
    python -m tools.evaluate runs/mnist --dataset=fashion_mnist --split=test \
        --binarization=none
    python -m tools.evaluate runs/mnist/model.keras --images=my_images.npy

MODEL is a `.keras` file, a trainer output directory (its model.keras), a preset name
(`tfvae.presets`: the SavedModel of its newest version holding a `.keras` file) or an
exported SavedModel directory (evaluated through its `log_prob`, `elbo` and `encode`
signatures; no KL per dimension then). Data: a split of a TFDS dataset through
`tfvae.data.load_dataset`, or a .npy of images [N, H, W, C] (--images: floats in
[0, 1] or uint8 0-255). When the model sits in a trainer output directory, the dataset,
binarization, seed and TFDS directories default to its config.json, so the test
split is binarized exactly as during training. A conditional model is evaluated on
log p(x|y) of each image's label (the dataset's labels, or --image_labels).

Prints the NLL (= -mean log p(x), nats) with its standard error over images and
the wall time, the ELBO, rate and distortion, the active units, what the figures are
(log-probabilities, or for a Gaussian log-densities), and for discretized (8-bit) and
Gaussian likelihoods bits per dimension (see tfvae/evaluate.py for the formulas;
a discretized model's are -log p / (D ln 2) of the levels); writes all of it, the KL
per dimension and the machine to --output as JSON (at the end). With --output, the
NLL's finished batches are kept beside it (OUTPUT.partial.npz, written every minute)
and the same command resumes an interrupted evaluation from them (the model is known
by its contents, so a clone of it on another machine resumes too). The images go in an
order drawn with the seed, so that the running log p(x) of the progress bar, and the
estimate over the finished batches printed when interrupted and when resuming, are
those of a random subset (a split's first rows can be unlike the rest).

With --sample_quality it also reports KID (with its standard error) and FID of
--quality_samples samples against as many test images drawn at random, in the features
of the classifier tfvae ships for the dataset (tfvae/classifiers/), the same figures
for two disjoint sets of test images (the floor), and for a conditional model the
Classification Accuracy Score and label consistency (`tfvae.sample_quality`; a
Bernoulli model's samples are Bernoulli draws of its means, like the binary data):

    python -m tools.evaluate hvae_binarized_mnist --sample_quality --num_samples=0 \
        --output=quality.json

Images follow the rules of `tfvae.checks` (shape, range, no NaN). A Bernoulli model
is refused grey-level images (values strictly between 0 and 1): its "log-likelihood"
of them is a cross-entropy; --allow_grey_levels reports it anyway. Bad input ends
with one line `tools.evaluate: error: ...` and status 1, before any long computation.
"""

import os
import time

from absl import app, flags

from tfvae import checks, cli, user_files
from tools import common

PROGRAM = "tools.evaluate"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
common.define_run_data_flags(images="to evaluate on instead of a dataset")
flags.adopt_module_key_flags(common)
flags.DEFINE_enum("precision", "float32", ["float32", "trained"],
                  "float32: evaluate a model trained in mixed precision through its "
                  "float32 copy (the figures the export gives); trained: in the 16-bit "
                  "policy it trained in (about 1.7x faster on conv models, less exact).")
flags.DEFINE_integer("num_images", 0, "Evaluate N of the images, drawn at random "
                     "with --seed (0: all); never the first N, as test rows can be "
                     "ordered (binarized MNIST's are).",
                     lower_bound=0)
flags.DEFINE_integer("num_samples", 5000, "k, importance samples per image for the "
                     "NLL; 0 skips the NLL.", lower_bound=0)
flags.DEFINE_integer("batch_size", 100, "Images per compiled call.", lower_bound=1)
flags.DEFINE_integer("chunk_size", 0, "Samples decoded at once per image (0: for a "
                     ".keras model as many as fit in a quarter of this machine's "
                     "memory, at most 10000 / batch_size; all k for a SavedModel).",
                     lower_bound=0)
flags.DEFINE_bool("allow_grey_levels", False, "Evaluate a Bernoulli model on grey-level "
                  "images anyway: the figures are then cross-entropies, not "
                  "log-likelihoods.")
flags.DEFINE_bool("jit_compile", True, "Compile the evaluation with XLA.")
flags.DEFINE_integer("num_levels", 256, "Gaussian likelihoods: bits/dim assume 8-bit "
                     "data dequantized as (x + u) / num_levels.", lower_bound=2)
flags.DEFINE_bool("sample_quality", False, "Also judge the model's samples: KID (+- "
                  "s.e.) and FID of --quality_samples samples against as many test "
                  "images, in a classifier's features; for conditional models CAS and "
                  "label consistency (tfvae/sample_quality.py).")
flags.DEFINE_integer("quality_samples", 5000, "N of --sample_quality: the samples, and "
                     "the test images (drawn at random with --seed) they are compared "
                     "with; N more give the floor when the split has 2N.",
                     lower_bound=20)
flags.DEFINE_string("quality_classifier", None, "A .keras classifier whose penultimate "
                    "layer gives the features; default: the one tfvae ships for the "
                    "dataset (tfvae/classifiers/).")
flags.DEFINE_string("output", None, "Write the report here as JSON.")
flags.DEFINE_integer("verbose", 1, "1: progress bar.")


def load_images(config, image_shape, num_classes=0):
    """Evaluation images [N, H, W, C] float32 in [0, 1] (with their labels, for a
    conditional model, as {"images", "labels"}) and their description: all of --images
    or of the run's test split (`tools.common`), or --num_images drawn at random with
    the seed."""
    import tensorflow as tf

    from tfvae import data

    if FLAGS.images:
        images, labels = common.npy_images(image_shape, num_classes=num_classes)
        images = {"images": images, "labels": labels} if num_classes else images
        description = FLAGS.images
    else:
        name, load = common.run_dataset(config)
        images, description = common.split_images(
            name, FLAGS.split, image_shape, FLAGS.batch_size, labels=bool(num_classes),
            num_classes=num_classes, **load)
        description += f" ({load['binarize']} binarization)"
    total, seed = len(tf.nest.flatten(images)[0]), common.option("seed", config)
    index = data.random_rows(total, FLAGS.num_images, seed)
    if index is None:
        return images, description
    return (_take_rows(images, index),
            f"{description}, {len(index)} of {total} drawn with seed {seed}")


def _take_rows(images, index):
    """Rows `index` of the images (and of their labels)."""
    import tensorflow as tf

    return tf.nest.map_structure(lambda rows: rows[index], images)


def in_random_order(images, seed):
    """The images (and labels) in an order drawn with the seed: the running figures of
    a long evaluation, and the finished batches of an interrupted one, are then those
    of a random subset, not of the split's first rows (which can be ordered)."""
    import tensorflow as tf

    from tfvae import data

    order = data.random_rows(len(tf.nest.flatten(images)[0]), 0, seed, shuffled=True)
    return images if order is None else _take_rows(images, order)


def load_model(location, evaluate):
    """(model for `evaluate.evaluate`, image shape, likelihood, number of classes of
    a class-conditional model or 0) of a located model."""
    if location["kind"] == "keras":
        from tfvae import keras_files

        model = keras_files.load_keras_model(location["path"])
        if FLAGS.precision == "float32":  # a mixed-precision model's float32 copy
            from tfvae.export import float32_copy
            model = float32_copy(model)
        if getattr(model, "context_dim", 0):
            raise checks.InputError("tools.evaluate takes class-conditional models; "
                                    "evaluate a context-vector model in Python.")
        return model, model.image_shape, model.decoder.likelihood, model.num_classes
    functions = evaluate.saved_model_functions(common.load_saved_model(location["path"]))
    if functions["context_key"] == "context":
        raise checks.InputError("tools.evaluate takes class-conditional models; "
                                "evaluate a context-vector model in Python.")
    classes = location["metadata"].get("num_classes") or 0
    if functions["context_key"] and not classes:
        raise checks.InputError(f"{location['path']} is conditional but its "
                                "metadata.json (num_classes) is missing.")
    return functions, functions["image_shape"], functions["likelihood"], classes


def kept_batches(location, description, seed):
    """With --output, the NLL's finished batches kept in OUTPUT.partial.npz, so that
    the same command resumes a long evaluation (`tfvae.resumable`)."""
    from tfvae import resumable

    path = f"{FLAGS.output}.partial.npz" if FLAGS.output and FLAGS.num_samples else None
    # The model by its contents: a clone or a copy of it on another machine resumes.
    # Read only when something is kept: a SavedModel's variables can be large.
    digest = user_files.content_digest(location["path"]) if path else None
    key = {"model_sha256": digest, "data": description, "k": FLAGS.num_samples,
           "batch_size": FLAGS.batch_size, "chunk_size": FLAGS.chunk_size, "seed": seed,
           "precision": FLAGS.precision, "order": "random"}
    kept = resumable.BatchResults(path, key)
    if path:
        print(f"The NLL's finished batches are kept in {path}: after an interruption "
              "the same command goes on from them.", flush=True)
    return kept


def quality_judge(config, image_shape, images, num_classes):
    """(classifier, what --sample_quality reports of it) after checking that it fits
    the model and that the split holds --quality_samples images, before any long
    computation."""
    from tfvae import classifier

    real = images["images"] if num_classes else images
    if FLAGS.quality_classifier:
        judge, record = classifier.load(FLAGS.quality_classifier), {}
        about = {"classifier": FLAGS.quality_classifier}
    else:
        judge, record = classifier.for_dataset(common.option("dataset", config),
                                               binary=checks.is_binary(real))
        about = {"classifier": f"tfvae/classifiers/{record['keras_file']}",
                 "classifier_test_accuracy": record["test_accuracy"]}
    try:
        classifier.check_fits(judge, image_shape, about["classifier"])
    except ValueError as error:
        raise checks.InputError(f"{error} Give --quality_classifier.") from None
    count = len(real)
    if FLAGS.quality_samples > count:
        raise checks.InputError(f"--quality_samples={FLAGS.quality_samples} needs as "
                                f"many test images, and there are {count}.")
    # A classifier of the model's classes judges label consistency; k-means clusters
    # (the shipped binarized_mnist one) do not.
    about["judges_labels"] = bool(num_classes) and not record.get("pseudo_labels") \
        and judge.output_shape[-1] == num_classes
    return judge, about


def sample_quality(model, images, num_classes, likelihood, judge, about, seed):
    """The --sample_quality report (`tfvae.sample_quality.evaluate_samples`)."""
    import keras

    from tfvae import sample_quality

    # A SavedModel's functions, or a VAE's means (an autoregressive head's draws)
    sample = model["sample"] if isinstance(model, dict) else \
        sample_quality.model_sampler(model)
    keras.utils.set_random_seed(seed)
    real, labels = (images["images"], images["labels"]) if num_classes else (images, None)
    report = sample_quality.evaluate_samples(
        sample, real, judge, FLAGS.quality_samples, real_labels=labels,
        draw_bernoulli=likelihood == "bernoulli" and checks.is_binary(real),
        label_consistency=about.pop("judges_labels"), seed=seed,
        log=print if FLAGS.verbose else None)
    report.update(about)
    print("sample quality: " + sample_quality.summary(report))
    return report


def print_report(report, description):
    nll = (f"NLL (k={report['k']}): {report['nll']:.3f} +- {report['nll_stderr']:.3f} "
           f"nats in {report['nll_seconds']:.1f} s" if "nll" in report else "")
    print(f"{description}, {report['num_images']} images")
    if nll:
        print(nll)
    print(f"ELBO: {report['elbo']:.3f} +- {report['elbo_stderr']:.3f} nats "
          f"(rate {report['rate']:.3f}, distortion {report['distortion']:.3f})")
    for name in ("nll_bits_per_dim", "elbo_bits_per_dim"):
        if name in report:
            stderr = report.get(f"{name}_stderr")
            print(f"{name}: {report[name]:.4f}" + (f" +- {stderr:.4f}" if stderr else ""))
    if "figures" in report:
        print(f"figures: {report['figures']}")
    print(f"active units: {report['active_units']} of {len(report['activity'])}")


@cli.interruptible(PROGRAM, "no report was written.",
                 smaller="lower --batch_size or --chunk_size")
def main(argv):
    cli.start_tool(PROGRAM, argv, 1, "python -m tools.evaluate MODEL [flags]; MODEL "
                   "is a .keras file, a run directory, a SavedModel directory or a preset.")
    from tfvae import data, evaluate, rundir

    try:
        user_files.check_writable(FLAGS.output)
        location = rundir.locate_model(argv[1])
        model, image_shape, likelihood, num_classes = load_model(location, evaluate)
        config = location["config"]
        images, description = load_images(config, image_shape, num_classes)
        if likelihood == "bernoulli" and not FLAGS.allow_grey_levels:
            checks.check_binary(images["images"] if num_classes else images, description)
        if FLAGS.sample_quality:
            judge, about = quality_judge(config, image_shape, images, num_classes)
    except (ValueError, OSError, data.DataUnavailableError) as error:
        cli.fail(PROGRAM, error)
    seed = common.option("seed", config)
    try:
        kept = kept_batches(location, description, seed)
    except ValueError as error:
        cli.fail(PROGRAM, error)
    try:
        report = evaluate.evaluate(
            model, in_random_order(images, seed), num_samples=FLAGS.num_samples,
            batch_size=FLAGS.batch_size, chunk_size=FLAGS.chunk_size or None, seed=seed,
            jit_compile=FLAGS.jit_compile, num_levels=FLAGS.num_levels,
            verbose=FLAGS.verbose, kept=kept)
    except KeyboardInterrupt:
        if kept.path:
            kept.write()
        if kept.done:
            print(f"So far: {evaluate.so_far(kept)}", flush=True)
        raise
    report.update(model=argv[1], data=description, machine=rundir.machine_info(),
                  date=time.strftime("%Y-%m-%d %H:%M:%S"))
    print_report(report, description)
    if FLAGS.sample_quality:
        report["sample_quality"] = sample_quality(model, images, num_classes,
                                                  likelihood, judge, about, seed)
    if FLAGS.output:
        if os.path.dirname(FLAGS.output):
            os.makedirs(os.path.dirname(FLAGS.output), exist_ok=True)
        user_files.write_json(FLAGS.output, report)
        kept.delete()
        print("report:", FLAGS.output)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
