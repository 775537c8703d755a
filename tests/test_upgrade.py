"""Tests of tools.upgrade: .keras files of tfvae 0.1.0 (before 2026-12-01) move to
this version with their weights (tests/data/tfvae_0.1.0: one tiny model per family
0.1.0 could build, and what its encoder and decoder gave under 0.1.0; make.py there
says how they were written)."""

import os
import shutil

import numpy as np
import pytest

import tfvae
from tfvae import checks, keras_files, user_files
from tools import upgrade

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "tfvae_0.1.0")


@pytest.mark.parametrize("family", ["mlp", "conv_vamp", "mixture"])
def test_a_0_1_0_file_moves_with_its_weights(family, tmp_path):
    old = os.path.join(DATA, f"{family}.keras")
    with pytest.raises(checks.InputError, match="written by tfvae before 0.2.0"):
        keras_files.load_keras_model(old)
    new = str(tmp_path / "new.keras")
    upgrade.upgrade(old, new)
    assert user_files.keras_writer(new) == f"tfvae {tfvae.__version__}"
    model = tfvae.VAE.from_preset(new)
    expected = np.load(os.path.join(DATA, f"{family}.npz"))
    q, p = model.encoder(expected["x"]), model.decoder(expected["z"])
    np.testing.assert_array_equal(q.mean(), expected["loc"])
    np.testing.assert_array_equal(q.stddev(), expected["scale"])
    np.testing.assert_array_equal(p.mean(), expected["mean"])
    assert getattr(model, "optimizer", None) is None  # not compiled: no state


def test_what_it_refuses(tmp_path):
    old = os.path.join(DATA, "mlp.keras")
    new = str(tmp_path / "new.keras")
    upgrade.upgrade(old, new)
    with pytest.raises(checks.InputError, match="reads .*new.keras .*as it is; nothing"):
        upgrade.upgrade(new, str(tmp_path / "again.keras"))
    cut = tmp_path / "cut.keras"
    cut.write_bytes(open(old, "rb").read()[:1000])
    with pytest.raises(checks.InputError, match="not an intact .keras file"):
        upgrade.upgrade(str(cut), str(tmp_path / "x.keras"))
    shutil.copy(old, tmp_path / "old.keras")
    with pytest.raises(checks.InputError, match="NEW .* cannot be written"):
        upgrade.upgrade(str(tmp_path / "old.keras"), str(tmp_path))
