"""tfvae: variational autoencoders on Keras 3 and TensorFlow Probability.

Encoders and decoders are Keras layers that return `tfp.distributions` objects; the
`VAE` model assembles the evidence lower bound from their `log_prob` and the KL
divergence, and trains with the stock `model.fit`. `VAE.from_preset(name)` loads a
trained model (`tfvae.presets`).

Without TensorFlow only `tfvae.checks`, `tfvae.cli`, `tfvae.user_files` and
`tfvae.presets` import (for the LiteRT path of tools.sample).
"""

from tfvae.version import __version__  # noqa: F401

try:
    import tensorflow as _tf  # noqa: F401
except ModuleNotFoundError as _error:
    if _error.name != "tensorflow":
        raise
else:
    # builders registers the optimizer that `.keras` files of EMA runs name.
    from tfvae import builders  # noqa: F401
    from tfvae.blocks import ResNetDecoder, ResNetEncoder, SpatialBlock
    from tfvae.data import load_dataset
    from tfvae.export import export_model
    from tfvae.model import VAE
    from tfvae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
    from tfvae.priors import ConditionalPrior, MixturePrior, StandardNormalPrior, VampPrior
    # The modules the README names, as attributes of `import tfvae`.
    from tfvae import (evaluate, losses, objectives, plots, presets,  # noqa: F401
                       sample_quality, warmstart)


def __getattr__(name):
    """`tfvae.train` on first use: imported with the package, it would be loaded twice
    by `python -m tfvae.train` (as tfvae.train, then as __main__)."""
    if name == "train":
        import importlib

        return importlib.import_module("tfvae.train")
    raise AttributeError(f"module 'tfvae' has no attribute {name!r}")

__all__ = [
    "VAE",
    "MLPEncoder",
    "ConvEncoder",
    "MLPDecoder",
    "ConvDecoder",
    "ResNetEncoder",
    "SpatialBlock",
    "ResNetDecoder",
    "StandardNormalPrior",
    "MixturePrior",
    "VampPrior",
    "ConditionalPrior",
    "load_dataset",
    "export_model",
]
