"""Figures of a trained VAE, written as PNG files a person can open.

Image figures (no dependency beyond TensorFlow; grids and PNGs from `tfvae.images`):

* `image_grid` / `save_image_grid`: images [N, H, W, C] in [0, 1] tiled in rows.
* `save_prior_samples`: means of p(x|z) for z ~ p(z).
* `save_reconstructions`: rows of inputs, each followed by a row of their
  reconstructions (decode of the posterior mean).
* `save_interpolation`: per pair of images a row x_a, decode((1 - t) mu_a + t mu_b)
  for t in [0, 1], x_b, with mu the posterior means.
* `save_latent_manifold` (Kingma & Welling 2014, Fig. 4): a grid of z over two latent
  dimensions, linearly spaced on the unit square and mapped through the inverse CDF
  of the standard normal, z = Phi^-1(u), u = (i + 1/2) / n, decoded to mean images;
  other dimensions are held at 0. z_1 grows rightwards, z_2 upwards.

Plots (need matplotlib, `pip install matplotlib`; drawn with its object API, so the
caller's pyplot state and backend are untouched):

* `save_latent_scatter`: posterior means coloured by label (the first two principal
  components when the latent space has more than two dimensions).
* `save_class_samples`: a class-conditional model's samples, a row per class,
  each row labelled with its class name.

Conditional models: the functions that encode images take their `labels` too (the
codes are of q(z|x, y)), and decoded paths keep the label of their first end point.
* `save_learning_curves` (Kingma & Welling 2014, Fig. 2): the lower bound against the
  number of training examples seen (log scale), one colour per run, training solid
  and validation dashed, from the trainer's per-epoch `history.csv`.

Every `save_*` function returns the path it wrote.
"""

import math
import os

import numpy as np
import tensorflow as tf

from tfvae import rundir
from tfvae.images import class_rows, image_grid, write_png  # noqa: F401 -- API


# -- image grids -------------------------------------------------------------------


def save_image_grid(images, path, columns=None, padding=1, zoom=1):
    """`image_grid` written to `path`."""
    return write_png(path, image_grid(images, columns, padding, zoom))


# -- figures of a model ----------------------------------------------------------------


def _numpy(x):
    return np.asarray(x, np.float32)


def model_inputs(model, images, labels=None):
    """`images`, or {"images", "labels"} for a class-conditional model (which needs
    the labels, one per image)."""
    if not getattr(model, "num_classes", 0):
        return images
    if labels is None:
        raise ValueError("This figure of a conditional model needs the images' labels.")
    return {"images": images, "labels": np.asarray(labels).reshape(-1)}


def save_prior_samples(model, path, num_samples=64, columns=None, zoom=1, temperature=1):
    """Means of p(x|z) for `num_samples` draws z ~ p(z) (at `temperature`: VAE.sample)."""
    return save_image_grid(_numpy(model.sample(int(num_samples), temperature=temperature)),
                           path, columns, zoom=zoom)


def save_reconstructions(model, images, path, columns=8, zoom=1, labels=None):
    """Rows of `columns` inputs, each row followed by their reconstructions."""
    images = _numpy(images)
    reconstructions = _numpy(model.reconstruct(model_inputs(model, images, labels)))
    rows = []
    for start in range(0, len(images), columns):
        for source in (images, reconstructions):
            row = source[start:start + columns]
            if len(row) < columns:  # a short last row, padded with white
                row = np.concatenate([row, np.ones([columns - len(row), *row.shape[1:]],
                                                  np.float32)])
            rows.append(row)
    return save_image_grid(np.concatenate(rows), path, columns, zoom=zoom)


def save_interpolation(model, images_a, images_b, path, steps=8, zoom=1,
                       labels_a=None, labels_b=None):
    """One row per pair: x_a, decodes of the linear path between posterior means, x_b.

    Args:
        images_a, images_b: [N, H, W, C] pairs of end points (or one image each).
        steps: decoded points on the path, t = 0, 1/(steps-1), ..., 1.
        labels_a, labels_b: their labels, for a conditional model (the path is
            decoded given labels_a).
    """
    images_a, images_b = _numpy(images_a), _numpy(images_b)
    if images_a.ndim == 3:
        images_a, images_b = images_a[None], images_b[None]
    if images_a.shape != images_b.shape:
        raise ValueError(f"Interpolation end points differ in shape: {images_a.shape} "
                         f"and {images_b.shape}.")
    if int(steps) < 2:
        raise ValueError(f"steps must be >= 2, got {steps}.")
    mu_a = _numpy(model.code(model_inputs(model, images_a, labels_a)))
    mu_b = _numpy(model.code(model_inputs(model, images_b, labels_b)))
    t = np.linspace(0.0, 1.0, int(steps), dtype=np.float32)[None, :, None]
    path_z = (1.0 - t) * mu_a[:, None] + t * mu_b[:, None]  # [N, steps, D]
    path_labels = None if labels_a is None or not getattr(model, "num_classes", 0) \
        else np.repeat(np.asarray(labels_a).reshape(-1), int(steps))
    decoded = _numpy(model.decode(path_z.reshape(-1, path_z.shape[-1]),
                                  labels=path_labels).mean())
    decoded = decoded.reshape(len(images_a), int(steps), *decoded.shape[1:])
    rows = np.concatenate([images_a[:, None], decoded, images_b[:, None]], axis=1)
    return save_image_grid(rows.reshape(-1, *rows.shape[2:]), path, int(steps) + 2,
                           zoom=zoom)


def latent_grid(num_per_side, latent_dim, dims=(0, 1)):
    """Codes [n * n, latent_dim] on the grid Phi^-1((i + 1/2) / n) over `dims`.

    Row-major with the first row at the largest z_2, so that a grid image shows
    z_1 increasing to the right and z_2 increasing upwards; other dimensions are 0.
    """
    if len(dims) != 2 or len(set(dims)) != 2 or not all(
            0 <= d < latent_dim for d in dims):
        raise ValueError(f"dims must be two different latent dimensions below "
                         f"{latent_dim}, got {dims}.")
    n = int(num_per_side)
    values = tf.math.ndtri((np.arange(n, dtype=np.float32) + 0.5) / n).numpy()
    z2, z1 = np.meshgrid(values[::-1], values, indexing="ij")
    z = np.zeros([n * n, latent_dim], np.float32)
    z[:, dims[0]] = z1.ravel()
    z[:, dims[1]] = z2.ravel()
    return z


def save_latent_manifold(model, path, num_per_side=20, dims=(0, 1), zoom=1):
    """The learned 2-D manifold: mean images decoded on `latent_grid`."""
    z = latent_grid(num_per_side, model.latent_dim, dims)
    images = _numpy(model.decode(z).mean())
    return save_image_grid(images, path, int(num_per_side), padding=0, zoom=zoom)


# -- matplotlib plots ------------------------------------------------------------------


def _figure(figsize, dpi):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("This plot needs matplotlib: pip install matplotlib "
                          "(or pip install tfvae[plots]).") from error
    figure = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(figure)
    return figure


def _save_figure(figure, path):
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def principal_components(points, count=2):
    """Projection of points [N, D] on their first `count` principal components."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return centred @ vt[:count].T


def posterior_means(model, images, batch_size=500, labels=None):
    """The posterior codes [N, D] of images [N, H, W, C]: E_q[z|x] for a Gaussian
    posterior (E_q[z|x, y] given the labels of a conditional model), all layers of a
    hierarchy concatenated top first (`VAE.code`)."""
    inputs = model_inputs(model, _numpy(images), labels)
    count = len(_numpy(images))
    return np.concatenate([
        _numpy(model.code(tf.nest.map_structure(lambda a: a[i:i + batch_size], inputs)))
        for i in range(0, count, batch_size)])


def save_latent_scatter(model, images, labels, path, figsize=(6, 6), dpi=100,
                        max_points=5000, class_names=None):
    """Posterior means of `images` coloured by `labels` (PCA to 2-D when D > 2).

    `labels` may be None (datasets without labels): one colour, no colour bar.
    `class_names` name the colour bar's ticks. A conditional model's means are of
    q(z|x, y), which tells less about the class than q(z|x) does: the label is in y.
    """
    images = _numpy(images)[:max_points]
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)[:max_points]
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    means = posterior_means(model, images, labels=labels)
    if means.shape[1] == 1:
        points, names = np.concatenate([means, np.zeros_like(means)], 1), ("z_1", "")
    elif means.shape[1] == 2:
        points, names = means, ("z_1", "z_2")
    else:
        points, names = principal_components(means), ("principal component 1",
                                                       "principal component 2")
    figure = _figure(figsize, dpi)
    axes = figure.add_subplot()
    if labels is None:
        axes.scatter(points[:, 0], points[:, 1], s=4, alpha=0.5)
    else:
        classes = np.unique(labels)
        scatter = axes.scatter(points[:, 0], points[:, 1], c=labels, s=4, alpha=0.7,
                               cmap="tab10" if len(classes) <= 10 else "viridis")
        bar = figure.colorbar(scatter, ax=axes, label="label",
                              ticks=classes if len(classes) <= 20 else None)
        if class_names is not None and len(classes) <= 20:
            bar.ax.set_yticklabels([class_names[int(c)] for c in classes])
    axes.set_xlabel(names[0])
    axes.set_ylabel(names[1])
    axes.set_title("Posterior means E[z|x, y]" if getattr(model, "num_classes", 0)
                   else "Posterior means E[z|x]")
    figure.tight_layout()
    return _save_figure(figure, path)


def save_class_samples(model, path, class_names=None, per_class=10, zoom=2, dpi=100,
                       temperature=1):
    """A class-conditional model's samples: row c holds `per_class` means of
    p(x|z, c), z ~ p(z) (p(z|c)) at `temperature` (VAE.sample), labelled with
    class_names[c]."""
    classes = int(getattr(model, "num_classes", 0))
    if not classes:
        raise ValueError("save_class_samples needs a class-conditional model.")
    names = list(class_names or range(classes))
    labels = class_rows(classes, per_class)
    samples = model.sample(len(labels), labels=labels, temperature=temperature)
    grid = image_grid(_numpy(samples), int(per_class), padding=1)
    height, width = grid.shape[:2]
    figure = _figure((width * zoom / dpi + 1.5, height * zoom / dpi + 0.4), dpi)
    axes = figure.add_axes([1.5 / (width * zoom / dpi + 1.5), 0.02,
                            1 - 1.5 / (width * zoom / dpi + 1.5) - 0.01, 0.96])
    axes.imshow(grid[..., 0] if grid.shape[-1] == 1 else grid, cmap="gray",
                vmin=0, vmax=255, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks((np.arange(classes) + 0.5) * height / classes,
                    [str(name) for name in names])
    return _save_figure(figure, path)


def layer_summary(model, statistics):
    """[(layer name, slice of its dimensions, active units)] for `latent_statistics`
    output, top layer first ("z_L" .. "z_1"; "z" for one layer)."""
    rows, start = [], 0
    for index, dim in enumerate(model.latent_dims):
        name = f"z_{model.num_layers - index}" if model.num_layers > 1 else "z"
        part = slice(start, start + dim)
        active = int(np.sum(statistics["activity"][part] > statistics["threshold"]))
        rows.append((name, part, active))
        start += dim
    return rows


def save_latent_activity(model, images, path, figsize=(8, 5), dpi=100, labels=None):
    """Activity A_u = Var_x(E_q[z_u]) and KL per dimension, coloured by layer.

    The active-unit count of each layer (A_u > 0.01, Burda et al. 2016) is in the
    legend; the KL panel is left out when the prior has no KL per dimension.
    """
    from tfvae import evaluate  # noqa: PLC0415 -- only this figure needs it

    stats = evaluate.latent_statistics(model, model_inputs(model, _numpy(images), labels))
    panels = 2 if stats["kl_per_dim"] is not None else 1
    figure = _figure(figsize, dpi)
    axes = [figure.add_subplot(panels, 1, i + 1) for i in range(panels)]
    for color, (name, part, active) in enumerate(layer_summary(model, stats)):
        dims = np.arange(part.start, part.stop)
        label = f"{name}: {active} of {len(dims)} active"
        axes[0].bar(dims, stats["activity"][part], color=f"C{color}", label=label)
        if panels == 2:
            axes[1].bar(dims, stats["kl_per_dim"][part], color=f"C{color}")
    axes[0].axhline(stats["threshold"], color="k", lw=0.8, ls="--")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("Var_x E[z_u|x]")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Latent activity per dimension (dashed: active-unit threshold)")
    if panels == 2:
        axes[1].set_ylabel("KL per dim (nats)")
    axes[-1].set_xlabel("latent dimension (top layer first)")
    figure.tight_layout()
    return _save_figure(figure, path)


def save_learning_curves(runs, path, examples_per_epoch=None, metric="elbo",
                         figsize=(7, 5), dpi=100, log_x=True, title=None, panel_by=None,
                         y_floor=None):
    """Lower bound vs training examples seen, one colour per run (K&W 2014, Fig. 2).

    Args:
        runs: {label: trainer output dir, history CSV or curve CSV path}, or a list of
            them (labelled by their names). A run directory with a curve.csv (the
            trainer's --curve_points_per_decade) is drawn from it: `train_<metric>`
            solid and `test_<metric>` dashed at its log-spaced points; otherwise from
            history.csv, which needs an `epoch` column (0-based) and `metric`
            (train, solid) and/or `val_<metric>` (validation, dashed).
        examples_per_epoch: training examples per epoch of a history: a number, a
            {label: number} dict or a function (label, run) -> number; by default
            read from the run directory (see `rundir.examples_per_epoch`).
        metric: the column to plot ("elbo"; "iwae" for an IWAE objective; "log_px",
            a curve's test log p(x), K&W Figure 3).
        panel_by: a config.json option (e.g. "latent_dim"): one panel per value,
            as K&W draw one per latent size; None: one panel.
        y_floor: the lowest value drawn (K&W's axes start near -150), so that a slow
            start far below (wake-sleep's first points) does not flatten the rest.
    """
    if not isinstance(runs, dict):
        runs = {os.path.basename(os.path.normpath(r)): r for r in runs}
    if not runs:
        raise ValueError("No runs to plot.")
    panels = {}
    for label, run in runs.items():
        key = _panel_key(run, panel_by)
        panels.setdefault(key, {})[label] = run
    keys = sorted(panels, key=lambda k: (not isinstance(k, (int, float)), k))
    columns = min(len(keys), 3)
    rows = -(-len(keys) // columns)
    figure = _figure((figsize[0] * columns, figsize[1] * rows), dpi)
    for index, key in enumerate(keys):
        axes, highest = figure.add_subplot(rows, columns, index + 1), -math.inf
        for color, (label, run) in zip((f"C{i % 10}" for i in range(len(runs))),
                                       panels[key].items()):
            for seen, values, style, part in _curves(label, run, metric,
                                                     examples_per_epoch):
                axes.plot(seen, values, style, color=color, marker=".",
                          label=f"{label} ({part})")
                highest = max(highest, max(values))
        if log_x:
            axes.set_xscale("log")
        if y_floor is not None:
            if highest <= y_floor:  # nothing would show: say so, not a blank panel
                raise ValueError(f"the lowest value to show, {y_floor:g}, is above every "
                                 f"{metric} drawn (highest {highest:.4g}); lower it.")
            axes.set_ylim(y_floor, highest + 0.05 * (highest - y_floor))
        axes.set_xlabel("training examples seen")
        axes.set_ylabel(f"{metric} (nats per image)")
        axes.set_title(f"{panel_by} = {key}" if panel_by else title or (
            "Importance-sampled log p(x) during training" if metric == "log_px"
            else "Lower bound during training"))
        axes.grid(True, which="both", alpha=0.3)
        axes.legend(fontsize="small")
    if panel_by and title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save_figure(figure, path)


def _panel_key(run, panel_by):
    if not panel_by:
        return None
    directory = run if os.path.isdir(run) else os.path.dirname(run)
    config = rundir.read_config(directory)
    if panel_by not in config:
        raise ValueError(f"{directory} has no config.json option {panel_by!r} to "
                         "group the panels by.")
    return config[panel_by]


def _curves(label, run, metric, examples_per_epoch):
    """[(examples seen, values, line style, part)] of one run: from its curve.csv
    when it has one, else from its history.csv."""
    curve = run if run.endswith(rundir.CURVE) else os.path.join(run, rundir.CURVE)
    if os.path.isfile(curve):
        table = rundir.read_history(curve)
        return _lines(table, table["examples"], curve,
                      ((f"train_{metric}", "train"), (f"test_{metric}", "test")))
    history = rundir.read_history(rundir.history_path(run))
    if "epoch" not in history:
        raise ValueError(f"{rundir.history_path(run)} has no 'epoch' column.")
    if callable(examples_per_epoch):
        per_epoch = examples_per_epoch(label, run)
    elif isinstance(examples_per_epoch, dict):
        per_epoch = examples_per_epoch[label]
    else:
        per_epoch = examples_per_epoch
    if per_epoch is None:
        per_epoch = rundir.examples_per_epoch(run, history)
    if per_epoch is None:
        raise ValueError(f"Examples per epoch of run {label!r} unknown; pass "
                         "examples_per_epoch.")
    seen = np.cumsum(np.broadcast_to(np.asarray(per_epoch, np.float64),
                                     history["epoch"].shape))  # after each epoch
    return _lines(history, seen, rundir.history_path(run),
                  ((metric, "train"), (f"val_{metric}", "validation")))


def _lines(table, seen, path, columns):
    """[(seen, values, line style, part)] of the two (column, part) of `columns` that
    `table` has: the first solid, the second dashed."""
    found = [(seen, table[column], style, part)
             for (column, part), style in zip(columns, ("-", "--")) if column in table]
    if not found:
        raise ValueError(f"{path} has neither {columns[0][0]!r} nor {columns[1][0]!r}.")
    return found
