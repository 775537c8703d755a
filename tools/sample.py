r"""Sample images from an exported VAE (SavedModel folder, .tflite file or preset) into a PNG.

    python -m tools.sample saved_models/mnist_vae/1 --output=samples.png
    python -m tools.sample hvae_binarized_mnist --output=samples.png   # a preset's SavedModel
    python -m tools.sample saved_models/mnist_vae/1/mnist_vae.tflite --output=samples.png
    python -m tools.sample saved_models/mnist_vae/1 --images=test.npy \
        --reconstructions=reconstructions.png           # or --dataset=binarized_mnist
    python -m tools.sample saved_models/mnist_vae/1/mnist_vae.tflite --benchmark_runs=200
    python -m tools.sample saved_models/mnist_vae/1/mnist_vae.tflite --codes=z.npy \
        --decoded=decoded.png                           # z [N, latent_dim] -> images
    python -m tools.sample saved_models/cvae_fashion_mnist/1 --labels=all \
        --output=by_class.png                # a conditional model: a row per class
    python -m tools.sample saved_models/cvae_fashion_mnist/1 --labels=3,3,7
    python -m tools.sample saved_models/cvae_fashion_mnist/4 --labels=all \
        --temperature=0.3,1,1,1              # the top layer's prior cooled
    python -m tools.sample saved_models/cvae_fashion_mnist/5 --labels=all \
        --guidance=1                         # classifier-free guidance
    python -m tools.sample saved_models/cvae_fashion_mnist/6 --labels=all \
        --temperature=0.3,1,1,1 --guidance=0.5,3   # the codes' and the image's
    python -m tools.sample deep_pixelcnn6_binarized_mnist --draws   # drawn images

--draws shows the images `sample` draws from p(x|z) (its `draws` output) instead of
the likelihood's means: an autoregressive head's means are one greedy image per z,
not a sample; exports of a discretized likelihood or of a head have them.

A class-conditional export samples given --labels: "all" draws a row of --columns
(default 10) samples per class, in class order (the classes' names, from
metadata.json, are printed); a list of class ids draws one sample per id. Its
--codes are decoded given --labels too (one per code, or one for all: another count
is refused), and --images or --dataset reconstructions given --dataset's labels (or
--image_labels, one per image of --images or one for all).

A SavedModel runs its `sample` signature (`sample_at_temperature` for --temperature,
`sample_guided` for --guidance, `reconstruct` for --reconstructions, `decode` for
--codes); a .tflite file runs its `sample` (`sample_at_temperature`, `sample_guided`)
and `decode` signatures in the LiteRT interpreter (pip install ai-edge-litert); that
path needs only numpy and ai-edge-litert, not TensorFlow. PNGs are written with zlib
from the standard library: no plotting package needed. The reconstruction grid alternates rows of inputs and
their reconstructions.

Bad input ends with one line `tools.sample: error: ...` and status 1, checked before
the interpreter runs: --num_samples outside 1 to tfvae.checks.MAX_SAMPLES (LiteRT
crashes on -1), codes of another width (LiteRT fails in its XNNPack delegate) or with
NaN or Inf (decoded to NaN), a missing or unreadable model or .npy, images of another
shape. Ctrl-C ends with one line and status 130.
"""

import time

import numpy as np
from absl import app, flags

from tfvae import checks, cli, user_files
from tfvae.images import class_rows, image_grid, write_png
from tools import common
from tools.samplers import load_sampler

PROGRAM = "tools.sample"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
cli.count_flag("num_samples", 64, "Number of prior samples in the grid (at most "
               f"{checks.MAX_SAMPLES}).", maximum=checks.MAX_SAMPLES)
flags.DEFINE_string("output", "samples.png", "PNG grid of prior samples.")
flags.DEFINE_integer("columns", None, "Grid columns; default: about square.",
                     lower_bound=1)
common.define_data_flags("Or a TFDS image dataset to take test images from.",
                         images="to reconstruct (SavedModel only)")
flags.adopt_module_key_flags(common)
flags.DEFINE_integer("num_reconstructions", 32, "Test images to reconstruct.",
                     lower_bound=1)
flags.DEFINE_string("reconstructions", "reconstructions.png",
                    "PNG of inputs and reconstructions (with --images or --dataset).")
flags.DEFINE_string("codes", None, "A .npy of codes z [N, latent_dim] (all layers, top "
                    "first) to decode (SavedModel or .tflite).")
flags.DEFINE_string("decoded", "decoded.png", "PNG of the decoded --codes.")
flags.DEFINE_string("labels", None, "Conditional models: 'all' (a row per class) or "
                    "comma-separated class ids (one sample each).")
flags.DEFINE_boolean("draws", False, "Grid of images drawn from p(x|z) (the export's "
                     "`draws`: a discretized likelihood's levels, an autoregressive "
                     "head's ancestral draws) instead of the likelihood's means.")
common.define_temperature_flag()
common.define_guidance_flag()
flags.DEFINE_integer("benchmark_runs", 0, "If > 0, also time this many calls of the "
                     "sampler at batch sizes 1 and --num_samples and print the latency.",
                     lower_bound=0)


# -- timing -----------------------------------------------------------------------------

def sampling_latency(sampler, num_samples=1, runs=100, labels=None):
    """Median seconds per call of `sampler.sample(num_samples, labels)` (after a
    warm-up); a conditional sampler takes one label for all."""
    sampler.sample(num_samples, labels)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        sampler.sample(num_samples, labels)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


# -- images -----------------------------------------------------------------------------

def reconstruction_grid(images, reconstructions, columns=8):
    """Rows of `columns` inputs, each followed by the row of their reconstructions."""
    rows = []
    for start in range(0, len(images), columns):
        for batch in (images, reconstructions):
            row = np.zeros((columns, *images.shape[1:]), np.float32)
            part = batch[start:start + columns]
            row[:len(part)] = part
            rows.append(row)
    return image_grid(np.concatenate(rows), columns, padding=0)


def load_test_images(count, image_shape, num_classes=0):
    """(float32 [count, H, W, C] in [0, 1], their labels or None) from --images (and
    --image_labels) or --dataset, in grey levels (`tools.common`)."""
    if FLAGS.images:
        return common.npy_images(image_shape, count, num_classes)
    batch, _ = common.split_images(
        FLAGS.dataset, FLAGS.split, image_shape, count, count, bool(num_classes),
        binarize=None, data_dir=FLAGS.tfds_data_dir, manual_dir=FLAGS.tfds_manual_dir)
    return (batch["images"], batch["labels"]) if num_classes else (batch, None)


def sample_labels(sampler):
    """(number of samples, their labels or None, grid columns) from the flags."""
    columns = FLAGS.columns
    if not sampler.num_classes:
        if FLAGS.labels is not None:
            raise checks.InputError("the model is unconditional: drop --labels.")
        return FLAGS.num_samples, None, columns
    text = FLAGS.labels or "all"
    if text == "all":
        columns = columns or 10
        print("rows:", ", ".join(f"{i} {name}" for i, name in
                                 enumerate(sampler.class_names)))
        return sampler.num_classes * columns, class_rows(
            sampler.num_classes, columns), columns
    try:
        labels = np.array([int(v) for v in text.split(",")])
    except ValueError:
        raise checks.InputError(f"--labels must be 'all' or comma-separated class ids, "
                                f"got {text!r}.") from None
    return len(labels), labels, columns


def decode_labels(labels, num_codes):
    """The labels of --codes: one class id for all of them or one per code, from
    --labels (checked before anything is drawn)."""
    if labels is None or len(labels) in (1, num_codes):
        return labels
    given = f"--labels={FLAGS.labels}" if FLAGS.labels else "--labels=all (the default)"
    raise checks.InputError(f"{given} gives {len(labels)} labels for the {num_codes} "
                            "--codes; give one class id for all codes, or one per code.")


@cli.interruptible(PROGRAM, "only the files printed above were written.",
                 smaller="lower --num_samples or --num_reconstructions")
def main(argv):
    cli.start_tool(PROGRAM, argv, 1,
                   "python -m tools.sample MODEL_DIR_OR_TFLITE_OR_PRESET [flags]")
    if (FLAGS.images or FLAGS.dataset) and argv[1].endswith(".tflite"):
        cli.fail(PROGRAM, "a .tflite file holds only `sample` and `decode`; pass the "
                          "SavedModel folder to reconstruct --images or --dataset.")
    try:
        sampler = load_sampler(argv[1])
        temperature = common.flag_temperature(FLAGS.temperature)
        guidance = common.flag_guidance(FLAGS.guidance)
        if temperature != 1 or sampler.guidance_input(guidance, "--guidance"):
            sampler.temperature_input(temperature, "--temperature")
        count, labels, columns = sample_labels(sampler)
        images, image_labels = (load_test_images(
            FLAGS.num_reconstructions, sampler.image_shape, sampler.num_classes)
            if FLAGS.images or FLAGS.dataset else (None, None))
        codes = (checks.as_codes(user_files.load_npy(FLAGS.codes), sampler.latent_dim,
                                 FLAGS.codes) if FLAGS.codes else None)
        code_labels = None if codes is None else decode_labels(labels, len(codes))
        samples = image_grid(sampler.sample(count, labels, temperature, guidance,
                                            FLAGS.draws), columns, padding=0)
        print("samples:", write_png(FLAGS.output, samples))
        if codes is not None:
            grid = image_grid(sampler.decode(codes, code_labels), FLAGS.columns,
                              padding=0)
            print("decoded:", write_png(FLAGS.decoded, grid))
        if images is not None:
            grid = reconstruction_grid(images, sampler.reconstruct(images, image_labels))
            print("reconstructions:", write_png(FLAGS.reconstructions, grid))
    except (ValueError, OSError, ImportError, RuntimeError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    if FLAGS.benchmark_runs > 0:
        for batch in sorted({1, FLAGS.num_samples}):
            seconds = sampling_latency(sampler, batch, FLAGS.benchmark_runs,
                                       None if labels is None else labels[:1])
            print(f"batch {batch}: {seconds * 1e3:.3f} ms per call, "
                  f"{seconds / batch * 1e6:.1f} us per sample")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
