"""The README's notebook cell runs as printed, on a shipped preset."""

import os
import re

import numpy as np
import pytest
import tensorflow_probability as tfp

pytestmark = pytest.mark.slow  # a shipped model and a short fit: seconds each

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")


def notebook_cell():
    """The first ```python block after '## In a notebook'."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text[text.index("## In a notebook"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_notebook_cell_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the preset is found from anywhere in a checkout
    cell = {}
    exec(compile(notebook_cell(), "<README cell>", "exec"), cell)  # noqa: S102
    assert cell["images"].shape == (16, 28, 28, 1)
    assert 10 < cell["nll"] < 300  # nats per image of the hierarchy's own samples
    assert cell["terms"]["elbo"].shape == (16,)
    assert set(cell["history"].history) == {"loss", "elbo", "rate", "distortion"}
    assert isinstance(cell["p"], tfp.distributions.Distribution)
    np.testing.assert_array_equal(cell["again"].encoder(cell["x"][:4]).mean(),
                                  cell["q"].mean())
