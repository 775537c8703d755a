"""tfvae: variational autoencoders on Keras 3 and TensorFlow Probability."""

import re

import setuptools

# The version lives in tfvae/version.py; setup.py reads it without importing tfvae.
with open("tfvae/version.py", encoding="utf-8") as _f:
    VERSION = re.search(r'__version__ = "([^"]+)"', _f.read()).group(1)

setuptools.setup(
    name="tfvae",
    version=VERSION,
    description="Variational autoencoders on Keras 3 (TensorFlow) and TensorFlow Probability.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    # tools/ stays out: a top-level package named "tools" would clash with others in
    # site-packages; the tools run from a clone (python -m tools.sample ...).
    packages=setuptools.find_packages(include=["tfvae", "tfvae.*"]),
    # The classifiers of tools.evaluate --sample_quality (tfvae/classifier.py).
    package_data={"tfvae": ["classifiers/*.keras", "classifiers/*.json"]},
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.18",
        # tensorflow-probability refuses to import without tf-keras (Keras 2), even
        # though tfvae itself only uses Keras 3 and tfp.distributions.
        "tf-keras",
        "tensorflow-probability>=0.25",
        "keras>=3.5",
        "tensorflow-datasets>=4.9",
        # tensorflow-datasets 4.9.x imports it at run time without declaring it.
        "importlib_resources",
        "absl-py",
        # TensorBoard logging of the training CLI; TF 2.21 no longer installs it.
        "tensorboard",
    ],
    extras_require={
        # LiteRT interpreter to run exported .tflite models.
        "litert": ["ai-edge-litert"],
        # Figures (latent scatter, learning curves); image grids need nothing extra.
        "plots": ["matplotlib"],
        # tools.serve: TF Serving's REST protocol through KServe's ModelServer. Pinned
        # to the minor version tried: tools.serve subclasses kserve.Model and reads its
        # v1 request handling. kserve needs protobuf < 7 (TensorFlow takes 6.x too).
        "serve": ["kserve>=0.21.0,<0.22"],
        "test": ["pytest", "ai-edge-litert", "matplotlib"],
    },
)
