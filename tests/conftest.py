"""Fixtures shared by the test files. Plain helpers live beside them: generated data
in pattern_data.py, small models in tiny_models.py, export checks in
export_parity.py (this folder is on sys.path)."""

import pytest
import tensorflow_datasets as tfds

MOCK_EXAMPLES = 48  # 3 steps of 16 per epoch


@pytest.fixture
def mock_mnist():
    """Every TFDS dataset served as `MOCK_EXAMPLES` random mock examples."""
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        yield


@pytest.fixture(scope="module")
def op_determinism_off_after():
    """--deterministic turns op determinism on for the whole process; a module that
    runs the trainer with it turns it off for the test files that run after it."""
    yield
    from tensorflow.python.framework import config  # the switch-off is not public

    config.disable_op_determinism()
