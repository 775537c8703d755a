r"""Do a conditional VAE's samples show the class they were asked for?

    python -m tools.label_consistency saved_models/cvae_fashion_mnist/3 \
        --dataset=fashion_mnist --tfds_manual_dir=/usr/share/datasets/fashion-mnist \
        --classifier=tfvae/classifiers/fashion_mnist_grey_wide.keras \
        --output=consistency.json

The judge is loaded from --classifier when that file exists (the one above is trained
separately on real grey-level Fashion-MNIST by `tools.train_classifier`, the judge of
the README's figures); otherwise a small convolutional classifier
(`tfvae.classifier.build`) is trained on the grey-level training images of --dataset
for --epochs and saved there. It is scored on the test split. It then classifies
--samples_per_class samples of each class of MODEL (a SavedModel folder, .tflite file,
.keras file, run directory or preset name): the label consistency is the fraction
whose predicted class is the requested one. The samples are the means of p(x|z, y)
(for a Bernoulli model of binarized images, the probability of each pixel being on: a
grey-level image, the classifier's own kind), drawn with --seed at --temperature: one
number, or one per stochastic layer, top first (--temperature=0.3,1,1,1 cools only the
top group; an export samples through its `sample_at_temperature` signature), with
classifier-free guidance of weight --guidance (a model trained with --context_dropout;
`sample_guided`): w for the codes, or w,v with v for the image.
`tools.evaluate --sample_quality` instead judges Bernoulli draws of the samples with
the classifier tfvae ships for binarized images (`tfvae.sample_quality`).

Prints the classifier's test accuracy, the consistency overall and per class; writes
them to --output as JSON. Bad input ends with one line `tools.label_consistency:
error: ...` and status 1.
"""

import os
import time

from absl import app, flags

from tfvae import checks, cli, user_files
from tools import common

PROGRAM = "tools.label_consistency"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)
common.define_data_flags("Labelled dataset of the classifier.", "fashion_mnist",
                         split=None)
flags.adopt_module_key_flags(common)
flags.DEFINE_string("train_split", "train", "Split the classifier learns from.")
flags.DEFINE_string("test_split", "test", "Split it is scored on.")
flags.DEFINE_string("classifier", None, "A .keras classifier: loaded when it exists, "
                    "else trained and saved there.")
flags.DEFINE_integer("epochs", 3, "Training epochs of a new classifier.", lower_bound=1)
flags.DEFINE_integer("samples_per_class", 100, "Conditional samples of each class.",
                     lower_bound=1, upper_bound=1000)
common.define_temperature_flag()
common.define_guidance_flag()
flags.DEFINE_integer("seed", 0, "Seed of the classifier and the samples.")
flags.DEFINE_string("output", None, "Write the figures here as JSON.")


def classifier_and_accuracy(info, load):
    """(classifier, its test accuracy): loaded from --classifier, or trained."""
    from tfvae import classifier, data

    if FLAGS.classifier and os.path.isfile(FLAGS.classifier):
        try:
            judge = classifier.load(FLAGS.classifier)
            classifier.check_fits(judge, info.image_shape, FLAGS.classifier,
                                  info.num_classes)
        except ValueError as error:
            raise checks.InputError(f"--classifier {error}") from None
    else:
        import keras

        keras.utils.set_random_seed(FLAGS.seed)  # the initial weights
        judge = classifier.build(info.image_shape, info.num_classes)
        train = data.load_dataset(FLAGS.dataset, FLAGS.train_split, 128, binarize=None,
                                  with_labels=True, shuffle=True, seed=FLAGS.seed, **load)
        classifier.train(judge, train, FLAGS.epochs, FLAGS.seed, verbose=2)
        if FLAGS.classifier:
            classifier.save(judge, FLAGS.classifier)
    test, _ = common.split_images(FLAGS.dataset, FLAGS.test_split, info.image_shape, 500,
                                  labels=True, binarize=None, **load)
    return judge, classifier.accuracy(judge, test["images"], test["labels"])


def conditional_sampler(path, temperature=1, guidance=0):
    """sample(n, labels) -> images of a conditional model, its number of classes and
    image shape; `temperature`: one, or one per stochastic layer; `guidance`: the
    classifier-free guidance weight w, or (w, v) with v the image's (`tfvae.guidance`)."""
    from tfvae import presets
    from tfvae.guidance import check_guidance

    path = presets.resolve(path)
    if path.endswith(".tflite") or os.path.isfile(os.path.join(path, "saved_model.pb")):
        from tools.samplers import load_sampler
        sampler = load_sampler(path)
        guided = sampler.guidance_input(guidance, "--guidance")  # before data or judge
        if temperature != 1 or guided:
            sampler.temperature_input(temperature, "--temperature")

        def sample(count, labels):
            return sampler.sample(count, labels, temperature, guidance)
        return sample, sampler.num_classes, sampler.image_shape
    model = common.load_keras(path)[0]
    temperature = checks.layer_temperatures(temperature, model.num_layers,
                                            "--temperature")
    check_guidance(model, guidance, "--guidance")

    def sample(count, labels):
        return model.sample(count, labels=labels, temperature=temperature,
                            guidance=guidance).numpy()
    return sample, model.num_classes, model.image_shape


def consistency(classifier, sample, num_classes, per_class):
    """(overall fraction, per-class fractions) of samples classified as requested."""
    from tfvae import classifier as classifiers
    from tfvae.images import class_rows

    labels = class_rows(num_classes, per_class)
    hits = classifiers.predict(classifier, sample(len(labels), labels)) == labels
    return float(hits.mean()), [float(hits[labels == c].mean()) for c in range(num_classes)]


@cli.interruptible(PROGRAM, "nothing was written.")
def main(argv):
    cli.start_tool(PROGRAM, argv, 1, "python -m tools.label_consistency MODEL [flags]")
    import keras

    from tfvae import data, rundir

    try:
        user_files.check_writable(FLAGS.output)
        guidance = common.flag_guidance(FLAGS.guidance)
        sample, num_classes, image_shape = conditional_sampler(
            argv[1], common.flag_temperature(FLAGS.temperature), guidance)
        if not num_classes:  # before the data: a wrong model needs no dataset to say so
            raise checks.InputError(f"{argv[1]} is not a class-conditional model.")
        load = dict(data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir)
        info = data.dataset_info(FLAGS.dataset, **load)
        if info.num_classes != num_classes or tuple(info.image_shape) != tuple(image_shape):
            raise checks.InputError(
                f"{argv[1]} models {num_classes} classes of {tuple(image_shape)} images, "
                f"{FLAGS.dataset} has {info.num_classes} of {tuple(info.image_shape)}.")
        classifier, accuracy = classifier_and_accuracy(info, load)
    except (ValueError, OSError, ImportError, data.DataUnavailableError) as error:
        cli.fail(PROGRAM, error)
    per_class = FLAGS.samples_per_class
    keras.utils.set_random_seed(FLAGS.seed)  # the same samples each time
    overall, by_class = consistency(classifier, sample, num_classes, per_class)
    names = info.class_names or [str(c) for c in range(num_classes)]
    print(f"classifier test accuracy on {FLAGS.dataset}[{FLAGS.test_split}]: "
          f"{accuracy:.4f}")
    guided = f", guidance {','.join(f'{w:g}' for w in guidance)}" if any(guidance) else ""
    print(f"label consistency of {per_class * num_classes} samples at temperature "
          f"{','.join(FLAGS.temperature)}{guided}: {overall:.4f}")
    for name, value in zip(names, by_class):
        print(f"  {name}: {value:.3f}")
    report = {"model": argv[1], "dataset": FLAGS.dataset,
              "classifier": FLAGS.classifier or f"trained here, {FLAGS.epochs} epochs",
              "classifier_test_accuracy": accuracy, "label_consistency": overall,
              "per_class": dict(zip(names, by_class)),
              "num_samples": per_class * num_classes,
              "temperature": [float(t) for t in FLAGS.temperature],
              "guidance": list(guidance),
              "machine": rundir.machine_info(),
              "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if FLAGS.output:
        user_files.write_json(FLAGS.output, report)
        print("report:", FLAGS.output)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
