r"""Draw the figures of a trained VAE (and learning curves of runs) as PNG files.

    python -m tools.visualize --checkpoint=runs/mnist_2d/best.keras \
        --output_dir=runs/mnist_2d/figures
    python -m tools.visualize --checkpoint=runs/mnist_2d --dataset=mnist \
        --binarization=dynamic              # scatter coloured by digit
    python -m tools.visualize --curves=runs/aevb_nz3,runs/aevb_nz20 \
        --output_dir=figures                # learning curves only (K&W Figure 2)
    python -m tools.visualize --curves=runs/aevb_nz3,runs/ws_nz3,... \
        --curves_panel_by=latent_dim        # a panel per latent size
    offline: add --tfds_manual_dir=../shared/data/binarized_mnist

Writes to --output_dir (default: <run directory>/figures):

    samples.png           means of p(x|z) for z ~ p(z); of a conditional model a
                          row per class, labelled with the class names
    reconstructions.png   rows of test images, each followed by its reconstructions
    interpolation.png     x_a, decodes along the line between posterior means, x_b
    manifold.png          2-D latent manifold through the inverse normal CDF
                          (latent_dim == 2, or two dimensions picked by --manifold_dims)
    latent_scatter.png    posterior means of test images, coloured by label when the
                          dataset has labels (PCA when latent_dim > 2)
    latent_activity.png   active units and KL per dimension, coloured by layer
    learning_curves.png   ELBO vs training examples seen, train and validation, for the
                          runs in --curves (default: the checkpoint's run directory);
                          from a run's curve.csv when it has one (train and test at
                          log-spaced points), else from its history.csv

--checkpoint is a .keras file, a trainer output directory or a preset name; dataset, binarization,
seed and TFDS directories default to that run's config.json. Each figure's path is
printed as it is written. Bad input (a missing or unreadable model or .npy, images
of another shape or with NaN, too few images, a bad --manifold_dims or --curves)
ends with one line `tools.visualize: error: ...` and status 1 before any figure of
the model is drawn; Ctrl-C with one line and status 130.
"""

import math
import os

from absl import app, flags, logging

from tfvae import checks, cli, user_files
from tools import common

PROGRAM = "tools.visualize"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
flags.DEFINE_string("checkpoint", None, "A .keras file, a trainer output directory or "
                    "a preset name (tfvae.presets).")
flags.DEFINE_list("curves", [], "Run directories or history.csv files whose learning "
                  "curves to draw; default: the checkpoint's run directory.")
flags.DEFINE_string("output_dir", None, "Where the PNGs go; default: "
                    "<run directory>/figures, else ./figures.")
common.define_run_data_flags(images="to draw instead of the dataset's (their "
                             "--image_labels colour the scatter)")
flags.adopt_module_key_flags(common)
flags.DEFINE_integer("num_samples", 100, "Prior samples.", lower_bound=1)
common.define_temperature_flag()
flags.DEFINE_integer("num_reconstructions", 32, "Test images to reconstruct.",
                     lower_bound=1)
flags.DEFINE_integer("interpolation_pairs", 5, "Rows of the interpolation figure.",
                     lower_bound=1)
flags.DEFINE_integer("interpolation_steps", 10, "Decoded points per interpolation.",
                     lower_bound=2)
flags.DEFINE_integer("manifold_size", 20, "Manifold grid points per side.",
                     lower_bound=1)
flags.DEFINE_list("manifold_dims", None, "Two latent dimensions for the manifold when "
                  "latent_dim > 2 (others held at 0).")
flags.DEFINE_integer("scatter_images", 5000, "Test images in the scatter plot.",
                     lower_bound=1)
flags.DEFINE_string("curves_metric", "elbo", "Column of history.csv to plot (and "
                    "val_<column>), e.g. elbo or iwae; of a curve.csv train_<column> "
                    "and test_<column>: elbo, or log_px (K&W Figure 3).")
flags.DEFINE_float("curves_ymin", None, "Lowest value the curves show (e.g. -200): "
                   "cuts off a slow start far below that would flatten the rest.")
flags.register_validator("curves_ymin", lambda v: v is None or math.isfinite(v),
                         "--curves_ymin must be a finite number, e.g. -250.")
flags.DEFINE_string("curves_panel_by", None, "A config.json option, e.g. latent_dim: "
                    "one panel of curves per value.")
flags.DEFINE_integer("examples_per_epoch", 0, "Training examples per epoch for the "
                     "curves (0: from each run's config.json and metrics.json).",
                     lower_bound=0)
flags.DEFINE_integer("zoom", 2, "Pixel upscaling of the image figures.", lower_bound=1)


def load_images(config, count, image_shape, num_classes=0):
    """(images [N, H, W, C] float32 in [0, 1], labels [N] or None, class names or
    None): the first `count` of --images, or of the run's test split (`tools.common`)."""
    if FLAGS.images:
        return (*common.npy_images(image_shape, count, num_classes), None)
    from tfvae import data

    name, load = common.run_dataset(config)
    info = data.dataset_info(name, load["data_dir"], load["manual_dir"])
    labelled = info.num_classes is not None
    batch, _ = common.split_images(name, FLAGS.split, image_shape, 500, count, labelled,
                                   **load)
    return ((batch["images"], batch["labels"]) if labelled else (batch, None)) + (
        info.class_names,)


def manifold_dims(latent_dim):
    """The two latent dimensions of the manifold figure, or None for no figure."""
    if latent_dim != 2 and not FLAGS.manifold_dims:
        return None
    dims = FLAGS.manifold_dims or ["0", "1"]
    try:
        dims = tuple(int(d) for d in dims)
    except ValueError:
        dims = ()
    if len(dims) != 2 or dims[0] == dims[1] or not all(0 <= d < latent_dim
                                                       for d in dims):
        raise checks.InputError(f"--manifold_dims must be two different latent "
                                f"dimensions 0 to {latent_dim - 1}, got "
                                f"{','.join(FLAGS.manifold_dims)!r}.")
    return dims


def load_inputs(model, config):
    """(model, images, labels, manifold dims, class names) of the checkpoint's model
    and its run's config.json, all checked."""
    dims = manifold_dims(model.latent_dim)
    count = max(FLAGS.num_reconstructions, 2 * FLAGS.interpolation_pairs,
                FLAGS.scatter_images)
    images, labels, class_names = load_images(config, count, model.image_shape,
                                              model.num_classes)
    if len(images) < 2 * FLAGS.interpolation_pairs:
        raise checks.InputError(
            f"--interpolation_pairs={FLAGS.interpolation_pairs} needs "
            f"{2 * FLAGS.interpolation_pairs} images, got {len(images)}; pass fewer pairs "
            "(at most half the images) or more images.")
    return model, images, labels, dims, class_names


def draw_model_figures(model, images, labels, dims, out, class_names=None):
    """The figures of the model, each path printed as it is written."""
    from tfvae import plots

    zoom, pairs, scatter = FLAGS.zoom, FLAGS.interpolation_pairs, FLAGS.scatter_images
    conditional = bool(model.num_classes)
    if conditional and labels is None:
        raise checks.InputError("the model is conditional: the images need labels "
                                "(a labelled dataset, or --image_labels).")
    temperature = checks.layer_temperatures(
        common.flag_temperature(FLAGS.temperature), model.num_layers, "--temperature")
    if conditional:
        show(plots.save_class_samples(model, out("samples.png"), class_names,
                                      zoom=max(zoom, 2), temperature=temperature))
    else:
        show(plots.save_prior_samples(model, out("samples.png"), FLAGS.num_samples,
                                      zoom=zoom, temperature=temperature))

    def some(count, start=0):
        return None if labels is None else labels[start:start + count]
    show(plots.save_reconstructions(model, images[:FLAGS.num_reconstructions],
                                    out("reconstructions.png"), columns=8, zoom=zoom,
                                    labels=some(FLAGS.num_reconstructions)))
    show(plots.save_interpolation(model, images[:pairs], images[pairs:2 * pairs],
                                  out("interpolation.png"),
                                  steps=FLAGS.interpolation_steps, zoom=zoom,
                                  labels_a=some(pairs), labels_b=some(pairs, pairs)))
    if dims and conditional:
        logging.warning("No manifold.png: a conditional model's manifold differs by "
                        "class; decode a grid with model.decode(z, labels=...).")
    elif dims:
        show(plots.save_latent_manifold(model, out("manifold.png"), FLAGS.manifold_size,
                                        dims, zoom=zoom))
    try:
        show(plots.save_latent_scatter(model, images[:scatter], some(scatter),
                                       out("latent_scatter.png"),
                                       class_names=class_names))
        show(plots.save_latent_activity(model, images[:scatter],
                                        out("latent_activity.png"),
                                        labels=some(scatter)))
    except ImportError as error:
        logging.warning("No scatter or latent activity plot: %s", error)


def show(path):
    print(path, flush=True)


@cli.interruptible(PROGRAM, "only the figures printed above were written.")
def main(argv):
    cli.start_tool(PROGRAM, argv, (0, 1))
    checkpoint = FLAGS.checkpoint or (argv[1] if len(argv) == 2 else None)
    if not checkpoint and not FLAGS.curves:
        cli.fail(PROGRAM, "pass --checkpoint (a .keras file or run directory) "
                          "and/or --curves (run directories).")
    import tensorflow as tf

    from tfvae import data, plots, rundir

    run_dir, inputs = None, None
    try:
        if checkpoint:
            model, location = common.load_keras(checkpoint)
            run_dir = os.path.dirname(location["path"])
            inputs = load_inputs(model, location["config"])
        output_dir = FLAGS.output_dir or os.path.join(run_dir or ".", "figures")
        user_files.check_writable(os.path.join(output_dir, "samples.png"),
                                  "--output_dir")
    except (ValueError, OSError, data.DataUnavailableError) as error:  # InputError too
        cli.fail(PROGRAM, error)

    def out(name):
        return os.path.join(output_dir, name)

    curves = FLAGS.curves or ([run_dir] if run_dir and os.path.isfile(
        rundir.history_path(run_dir)) else [])
    if curves:  # first: a bad --curves then fails before the slower figures
        try:
            show(plots.save_learning_curves(
                curves, out("learning_curves.png"), metric=FLAGS.curves_metric,
                examples_per_epoch=FLAGS.examples_per_epoch or None,
                panel_by=FLAGS.curves_panel_by, y_floor=FLAGS.curves_ymin))
        except (ImportError, ValueError, OSError) as error:
            if FLAGS.curves:  # asked for: an error; the run's own: a warning
                cli.fail(PROGRAM, f"no learning curves: {checks.first_line(error)}")
            logging.warning("No learning curves: %s", error)
    if inputs:
        tf.random.set_seed(common.option("seed", location["config"]))
        model, images, labels, dims, class_names = inputs
        try:
            draw_model_figures(model, images, labels, dims, out, class_names)
        except checks.InputError as error:
            cli.fail(PROGRAM, error)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
