"""Each figure of tfvae.plots is a non-empty PNG of the expected pixel size."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfvae import builders, evaluate, plots, rundir
from tiny_models import tiny_vae

SHAPE = (4, 4, 1)


@pytest.fixture(scope="module")
def model():
    return tiny_vae(SHAPE)


@pytest.fixture(scope="module")
def images():
    return (np.random.default_rng(0).random([10, *SHAPE]) > 0.5).astype(np.float32)


def png_shape(path):
    assert os.path.getsize(path) > 0
    return tuple(tf.io.decode_png(tf.io.read_file(path)).shape)


def test_image_grid_places_images_between_padding():
    images = np.zeros([5, 4, 4, 1], np.float32)
    images[4] = 0.5
    grid = plots.image_grid(images, columns=3, padding=1, zoom=2)
    assert grid.shape == (2 * (8 + 1) + 1, 3 * (8 + 1) + 1, 1) and grid.dtype == np.uint8
    assert (grid[1:9, 1:9] == 0).all()            # first image, black
    assert (grid[10:18, 10:18] == 128).all()      # fifth image (row 1, column 1), grey
    assert (grid[0] == 255).all() and (grid[10:18, 19:27] == 255).all()  # padding, gap
    with pytest.raises(ValueError, match="images"):
        plots.image_grid(np.zeros([2, 4, 4, 2]))


def test_save_image_grid_and_prior_samples(tmp_path, model):
    path = plots.save_image_grid(np.ones([3, 4, 4, 3]), str(tmp_path / "a" / "g.png"),
                                 columns=3)
    assert png_shape(path) == (6, 16, 3)
    path = plots.save_prior_samples(model, str(tmp_path / "samples.png"), num_samples=6,
                                    columns=3, zoom=2)
    assert png_shape(path) == (2 * 9 + 1, 3 * 9 + 1, 1)


def test_reconstructions(tmp_path, model, images):
    path = plots.save_reconstructions(model, images[:5], str(tmp_path / "r.png"),
                                      columns=4)
    # Two groups of (inputs row, reconstructions row).
    assert png_shape(path) == (4 * 5 + 1, 4 * 5 + 1, 1)


def test_interpolation(tmp_path, model, images):
    path = plots.save_interpolation(model, images[:2], images[2:4],
                                    str(tmp_path / "i.png"), steps=5)
    assert png_shape(path) == (2 * 5 + 1, 7 * 5 + 1, 1)
    path = plots.save_interpolation(model, images[0], images[1], str(tmp_path / "j.png"))
    assert png_shape(path) == (6, 10 * 5 + 1, 1)


def test_latent_grid_and_manifold(tmp_path, model):
    z = plots.latent_grid(4, 3, dims=(0, 2))
    assert z.shape == (16, 3) and (z[:, 1] == 0).all()
    values = tf.math.ndtri((np.arange(4) + 0.5) / 4).numpy()
    np.testing.assert_allclose(z[:4, 0], values, rtol=1e-6)       # z_1 to the right
    np.testing.assert_allclose(z[::4, 2], values[::-1], rtol=1e-6)  # z_2 upwards
    path = plots.save_latent_manifold(model, str(tmp_path / "m.png"), num_per_side=6)
    assert png_shape(path) == (24, 24, 1)
    with pytest.raises(ValueError, match="dims"):
        plots.latent_grid(4, 2, dims=(0, 2))


def test_latent_scatter(tmp_path, model, images):
    pytest.importorskip("matplotlib")
    path = plots.save_latent_scatter(model, images, np.arange(10) % 3,
                                     str(tmp_path / "s.png"), figsize=(4, 3), dpi=50)
    assert png_shape(path)[:2] == (150, 200)
    wide = tiny_vae(SHAPE, 5)
    path = plots.save_latent_scatter(wide, images, np.arange(10), str(tmp_path / "p.png"),
                                     figsize=(4, 3), dpi=50)
    assert png_shape(path)[:2] == (150, 200)
    path = plots.save_latent_scatter(wide, images, None, str(tmp_path / "u.png"),
                                     figsize=(4, 3), dpi=50)
    assert png_shape(path)[:2] == (150, 200)


def _write_run(directory, elbos, with_metadata=True):
    os.makedirs(directory)
    with open(os.path.join(directory, "history.csv"), "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "elbo", "val_elbo", "epoch_time_s", "images_per_s"])
        for epoch, elbo in enumerate(elbos):
            writer.writerow([epoch, elbo, elbo - 1.0, 2.0, 500.0])
    if with_metadata:
        with open(os.path.join(directory, "config.json"), "w") as f:
            json.dump({"batch_size": 100}, f)
        with open(os.path.join(directory, "metrics.json"), "w") as f:
            json.dump({"steps_per_epoch": 10}, f)


def test_learning_curves(tmp_path):
    pytest.importorskip("matplotlib")
    _write_run(str(tmp_path / "nz3"), [-150.0, -130.0, -120.0])
    _write_run(str(tmp_path / "nz20"), [-140.0, -110.0], with_metadata=False)
    assert rundir.examples_per_epoch(str(tmp_path / "nz3")) == 1000.0
    history = rundir.read_history(str(tmp_path / "nz20" / "history.csv"))
    np.testing.assert_allclose(rundir.examples_per_epoch(
        str(tmp_path / "nz20"), history), [1000.0, 1000.0])
    runs = {"Nz=3": str(tmp_path / "nz3"), "Nz=20": str(tmp_path / "nz20" / "history.csv")}
    path = plots.save_learning_curves(runs, str(tmp_path / "curves.png"),
                                      figsize=(4, 3), dpi=50)
    assert png_shape(path)[:2] == (150, 200)
    path = plots.save_learning_curves(runs, str(tmp_path / "c2.png"), figsize=(4, 3),
                                      dpi=50, examples_per_epoch=lambda label, run: 50000)
    assert png_shape(path)[:2] == (150, 200)
    bare = tmp_path / "bare.csv"
    bare.write_text("epoch,elbo\n0,-100\n")
    with pytest.raises(ValueError, match="examples_per_epoch"):
        plots.save_learning_curves([str(bare)], str(tmp_path / "x.png"))



def _write_curve(directory, latent_dim, elbos):
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump({"latent_dim": latent_dim}, f)
    rows = ["examples,seconds,train_elbo,test_elbo,test_log_px"] + [
        f"{10 ** (4 + i)},{i},{e},{e - 1},{e + 5}" for i, e in enumerate(elbos)]
    with open(os.path.join(directory, "curve.csv"), "w") as f:
        f.write("\n".join(rows) + "\n")


def test_learning_curves_from_log_spaced_curves_in_a_panel_per_latent_size(tmp_path):
    pytest.importorskip("matplotlib")
    _write_curve(str(tmp_path / "aevb3"), 3, [-160.0, -140.0, -130.0])
    _write_curve(str(tmp_path / "ws3"), 3, [-170.0, -160.0])
    _write_curve(str(tmp_path / "aevb20"), 20, [-150.0, -110.0])
    runs = [str(tmp_path / name) for name in ("aevb3", "ws3", "aevb20")]
    path = plots.save_learning_curves(runs, str(tmp_path / "fig2.png"), figsize=(4, 3),
                                      dpi=50, panel_by="latent_dim")
    assert png_shape(path)[:2] == (150, 400)  # two panels side by side
    floored = plots.save_learning_curves(runs, str(tmp_path / "floored.png"),
                                         figsize=(4, 3), dpi=50, panel_by="latent_dim",
                                         y_floor=-155.0)
    assert png_shape(floored) == png_shape(path)
    with open(path, "rb") as whole, open(floored, "rb") as cut:
        assert whole.read() != cut.read()  # the lowest points are cut off
    with pytest.raises(ValueError, match="above every elbo drawn"):
        plots.save_learning_curves(runs, str(tmp_path / "x.png"), y_floor=-100.0)
    path = plots.save_learning_curves(runs[:2], str(tmp_path / "fig3.png"),
                                      metric="log_px", figsize=(4, 3), dpi=50)
    assert png_shape(path)[:2] == (150, 200)
    with pytest.raises(ValueError, match="train_iwae"):
        plots.save_learning_curves(runs, str(tmp_path / "x.png"), metric="iwae")
    with pytest.raises(ValueError, match="no config.json option 'prior'"):
        plots.save_learning_curves(runs, str(tmp_path / "x.png"), panel_by="prior")

@pytest.mark.slow
def test_visualize_tool_writes_every_figure(tmp_path, model, images):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    run = tmp_path / "run"
    _write_run(str(run), [-150.0, -130.0])
    model.save(str(run / "model.keras"))
    np.save(tmp_path / "images.npy", images)
    np.save(tmp_path / "labels.npy", np.arange(len(images)) % 2)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "tools.visualize", f"--checkpoint={run}",
         f"--images_npy={tmp_path / 'images.npy'}",
         f"--labels_npy={tmp_path / 'labels.npy'}", "--num_reconstructions=4",
         "--interpolation_pairs=2", "--manifold_size=5", "--num_samples=9"],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    names = ("samples", "reconstructions", "interpolation", "manifold",
             "latent_scatter", "latent_activity", "learning_curves")
    for name in names:
        assert png_shape(str(run / "figures" / f"{name}.png"))[0] > 0, name
    # zoom 2 of 4x4 images, padding 0, 5 x 5 grid.
    assert png_shape(str(run / "figures" / "manifold.png")) == (40, 40, 1)


def test_latent_activity_counts_each_layer(tmp_path, images):
    pytest.importorskip("matplotlib")
    deep = builders.build_model(SHAPE, latent_dim=2, top_down_latent_dims=(3,),
                                encoder_hidden_units=(8, 8), decoder_hidden_units=(8,),
                                top_down_hidden_units=(8,))
    path = plots.save_latent_activity(deep, images, str(tmp_path / "activity.png"))
    assert png_shape(path)[0] > 0
    stats = evaluate.latent_statistics(deep, images)
    assert len(stats["activity"]) == len(stats["kl_per_dim"]) == 5
    rows = plots.layer_summary(deep, stats)
    assert [(name, part.stop - part.start) for name, part, _ in rows] == [
        ("z_2", 2), ("z_1", 3)]
    assert sum(active for *_, active in rows) == stats["active_units"]
