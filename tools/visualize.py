r"""Draw the figures of a trained VAE (and learning curves of runs) as PNG files.

    python -m tools.visualize --checkpoint=runs/mnist_2d/best.keras \
        --output_dir=runs/mnist_2d/figures
    python -m tools.visualize --checkpoint=runs/mnist_2d --dataset=mnist \
        --binarization=dynamic              # scatter coloured by digit
    python -m tools.visualize --curves=runs/aevb_nz3,runs/aevb_nz20 \
        --output_dir=figures                # learning curves only (K&W Figure 2)
    offline: add --tfds_manual_dir=../shared/data/binarized_mnist

Writes to --output_dir (default: <run directory>/figures):

    samples.png           means of p(x|z) for z ~ p(z)
    reconstructions.png   rows of test images, each followed by its reconstructions
    interpolation.png     x_a, decodes along the line between posterior means, x_b
    manifold.png          2-D latent manifold through the inverse normal CDF
                          (latent_dim == 2, or two dimensions picked by --manifold_dims)
    latent_scatter.png    posterior means of test images, coloured by label when the
                          dataset has labels (PCA when latent_dim > 2)
    latent_activity.png   active units and KL per dimension, coloured by layer
    learning_curves.png   ELBO vs training examples seen, train and validation, for the
                          runs in --curves (default: the checkpoint's run directory)

--checkpoint is a .keras file or a trainer output directory; dataset, binarization,
seed and TFDS directories default to that run's config.json.
"""

import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A .keras file or a trainer output directory.")
flags.DEFINE_list("curves", [], "Run directories or history.csv files whose learning "
                  "curves to draw; default: the checkpoint's run directory.")
flags.DEFINE_string("output_dir", None, "Where the PNGs go; default: "
                    "<run directory>/figures, else ./figures.")
flags.DEFINE_string("dataset", None, "TFDS dataset; default: the run's config.json, "
                    "else binarized_mnist.")
flags.DEFINE_string("split", "test", "Split to take images from.")
flags.DEFINE_enum("binarization", None, ["static", "dynamic", "none"],
                  "Default: the run's config.json, else static.")
flags.DEFINE_integer("seed", None, "Seed of the data pipeline and of the sampler.")
flags.DEFINE_string("tfds_data_dir", None, "TFDS data_dir (prepared datasets).")
flags.DEFINE_string("tfds_manual_dir", None, "Source files for offline preparation.")
flags.DEFINE_string("images_npy", None, "Use these images [N, H, W, C] instead.")
flags.DEFINE_string("labels_npy", None, "Labels [N] of --images_npy for the scatter.")
flags.DEFINE_integer("num_samples", 100, "Prior samples.")
flags.DEFINE_integer("num_reconstructions", 32, "Test images to reconstruct.")
flags.DEFINE_integer("interpolation_pairs", 5, "Rows of the interpolation figure.")
flags.DEFINE_integer("interpolation_steps", 10, "Decoded points per interpolation.")
flags.DEFINE_integer("manifold_size", 20, "Manifold grid points per side.")
flags.DEFINE_list("manifold_dims", None, "Two latent dimensions for the manifold when "
                  "latent_dim > 2 (others held at 0).")
flags.DEFINE_integer("scatter_images", 5000, "Test images in the scatter plot.")
flags.DEFINE_string("curves_metric", "elbo", "Column of history.csv to plot (and "
                    "val_<column>), e.g. elbo or iwae.")
flags.DEFINE_integer("examples_per_epoch", 0, "Training examples per epoch for the "
                     "curves (0: from each run's config.json and metrics.json).")
flags.DEFINE_integer("zoom", 2, "Pixel upscaling of the image figures.")


def option(name, config, default=None):
    """A flag given on the command line, else the run's config, else `default`."""
    if FLAGS[name].present:
        return FLAGS[name].value
    return config.get(name, default)


def load_images(config, count):
    """(images [N, H, W, C] float32 in [0, 1], labels [N] or None)."""
    import numpy as np

    if FLAGS.images_npy:
        images = np.load(FLAGS.images_npy)[:count]
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype == np.uint8:
            images = images / 255.0
        labels = np.load(FLAGS.labels_npy)[:count] if FLAGS.labels_npy else None
        return images.astype(np.float32), labels
    from tfvae import data

    name = option("dataset", config, "binarized_mnist")
    binarization = option("binarization", config, "static")
    load = dict(data_dir=option("tfds_data_dir", config),
                manual_dir=option("tfds_manual_dir", config))
    labelled = data.dataset_info(name, **load).num_classes is not None
    ds = data.load_dataset(name, FLAGS.split, 500, shuffle=False, with_labels=labelled,
                           binarize=None if binarization == "none" else binarization,
                           seed=option("seed", config, 0), **load)
    ds = ds.unbatch().take(count).batch(count)
    batch = next(iter(ds))
    if labelled:
        return batch[0].numpy(), batch[1].numpy()
    return batch.numpy(), None


def main(argv):
    if len(argv) > 2:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[2:])}")
    checkpoint = FLAGS.checkpoint or (argv[1] if len(argv) == 2 else None)
    if not checkpoint and not FLAGS.curves:
        raise app.UsageError("Pass --checkpoint (a .keras file or run directory) "
                             "and/or --curves (run directories).")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import keras
    import tensorflow as tf

    import tfvae  # noqa: F401  (registers the tfvae classes for load_model)
    from tfvae import data, plots, rundir

    written = []
    run_dir, config = None, {}
    if checkpoint:
        try:
            location = rundir.locate_model(checkpoint)
        except FileNotFoundError as error:
            sys.exit(f"Error: {error}")
        if location["kind"] != "keras":
            sys.exit("Error: tools.visualize needs a .keras checkpoint or run directory; "
                     "for a SavedModel use python -m tools.sample.")
        run_dir, config = os.path.dirname(location["path"]), location["config"]
    output_dir = FLAGS.output_dir or os.path.join(run_dir or ".", "figures")

    def out(name):
        return os.path.join(output_dir, name)

    if checkpoint:
        model = keras.saving.load_model(location["path"])
        tf.random.set_seed(option("seed", config, 0))
        count = max(FLAGS.num_reconstructions, 2 * FLAGS.interpolation_pairs,
                    FLAGS.scatter_images)
        try:
            images, labels = load_images(config, count)
        except (ValueError, OSError, data.DataUnavailableError) as error:
            sys.exit(f"Error: {error}")
        zoom = FLAGS.zoom
        written.append(plots.save_prior_samples(model, out("samples.png"),
                                                FLAGS.num_samples, zoom=zoom))
        written.append(plots.save_reconstructions(
            model, images[:FLAGS.num_reconstructions], out("reconstructions.png"),
            columns=8, zoom=zoom))
        pairs = FLAGS.interpolation_pairs
        written.append(plots.save_interpolation(
            model, images[:pairs], images[pairs:2 * pairs], out("interpolation.png"),
            steps=FLAGS.interpolation_steps, zoom=zoom))
        latent_dim = model.latent_dim
        if latent_dim == 2 or FLAGS.manifold_dims:
            dims = tuple(int(d) for d in FLAGS.manifold_dims or (0, 1))
            written.append(plots.save_latent_manifold(
                model, out("manifold.png"), FLAGS.manifold_size, dims, zoom=zoom))
        try:
            written.append(plots.save_latent_scatter(
                model, images[:FLAGS.scatter_images],
                None if labels is None else labels[:FLAGS.scatter_images],
                out("latent_scatter.png")))
        except ImportError as error:
            logging.warning("No scatter plot: %s", error)
        try:
            written.append(plots.save_latent_activity(
                model, images[:FLAGS.scatter_images], out("latent_activity.png")))
        except ImportError as error:
            logging.warning("No latent activity plot: %s", error)

    curves = FLAGS.curves or ([run_dir] if run_dir and os.path.isfile(
        rundir.history_path(run_dir)) else [])
    if curves:
        try:
            written.append(plots.save_learning_curves(
                curves, out("learning_curves.png"), metric=FLAGS.curves_metric,
                examples_per_epoch=FLAGS.examples_per_epoch or None))
        except (ImportError, ValueError, OSError) as error:
            logging.warning("No learning curves: %s", error)
    for path in written:
        print(path)


if __name__ == "__main__":
    app.run(main)
