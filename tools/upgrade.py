r"""Move a `.keras` file written by tfvae 0.1.0 before 2026-12-01 to this version.

    python -m tools.upgrade runs/mnist/model.keras runs/mnist/model_0.2.keras

Until the one-core change (commit e1c49b7, 2026-12-01) an encoder kept its posterior
layer's weights at `encoder/head`; since then the head is a layer of its own
(`heads.GaussianPosterior`) and they sit at `encoder/head/params`. Nothing else of the
models 0.1.0 could build (MLP and conv networks; standard normal, mixture and
VampPrior priors) moved. The tool copies the weights under the new names, leaves the
optimizer's state behind (go on training with `--init_from=NEW.keras`), loads the
result with this version and writes it with `export.save_keras`, so NEW records the
version that wrote it. A file this version reads already, or one whose layout is
another, is refused in one line (`tools.upgrade: error: ...`, status 1).
"""

import io
import json
import os
import tempfile
import zipfile

from absl import app

from tfvae import checks, cli, user_files
from tfvae.version import __version__

PROGRAM = "tools.upgrade"
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
# The weights that moved: (where 0.1.0 wrote them, where this version reads them).
MOVED = (("encoder/head/vars", "encoder/head/params/vars"),)


def upgraded_archive(source, target):
    """Writes to `target` the .keras archive of `source` with the weights of `MOVED`
    at their new names and no optimizer (config, metadata and weights only)."""
    import h5py  # noqa: PLC0415 -- Keras's own dependency, for its weights file

    with zipfile.ZipFile(source) as archive:
        config = json.loads(archive.read("config.json"))
        metadata = archive.read("metadata.json")
        weights = io.BytesIO(archive.read("model.weights.h5"))
    config.pop("compile_config", None)
    with h5py.File(weights, "r+") as store:
        for old, new in MOVED:
            if old not in store:
                raise checks.InputError(f"{source} has no weights at {old}: it is not a "
                                        "tfvae 0.1.0 file this tool knows.")
            store.require_group(os.path.dirname(new))
            store.move(old, new)
        store.pop("optimizer", None)
    with zipfile.ZipFile(target, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", metadata)
        archive.writestr("model.weights.h5", weights.getvalue())


def upgrade(source, target):
    """The VAE of the 0.1.0 file `source`, written to `target` by this version."""
    writer = user_files.keras_writer(source)
    if writer is None:
        raise checks.InputError(f"{source} is not an intact .keras file of a tfvae model.")
    user_files.check_writable(target, "NEW")
    # TensorFlow only once the input is good.
    from tfvae import export, keras_files  # noqa: PLC0415

    try:
        keras_files.load_keras_model(source)
    except checks.InputError:
        pass
    else:
        raise checks.InputError(f"tfvae {__version__} reads {source} (written by "
                                f"{writer}) as it is; nothing to upgrade.")
    with tempfile.TemporaryDirectory() as scratch:
        moved = os.path.join(scratch, "moved.keras")
        upgraded_archive(source, moved)
        model = keras_files.load_keras_model(moved)
    export.save_keras(model, target)
    return model


@cli.interruptible(PROGRAM, "NEW is written only at the end; it may be missing.")
def main(argv):
    cli.start_tool(PROGRAM, argv, 2, "python -m tools.upgrade OLD.keras NEW.keras")
    try:
        model = upgrade(argv[1], argv[2])
    except (OSError, ValueError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    print(f"{argv[2]}: {type(model).__name__} of {model.image_shape} images, latent "
          f"dimension {model.latent_dim}, written by tfvae {__version__}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
