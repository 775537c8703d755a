r"""Export a trained `.keras` checkpoint: SavedModel (TF Serving layout) + TFLite.

    python -m tools.export --checkpoint=/tmp/vae/model.keras --base_dir=saved_models \
        --name=mnist_vae --tflite=float32,float16,int8

writes saved_models/mnist_vae/<version>/ (next free integer unless --version) holding
the SavedModel, metadata.json and mnist_vae.tflite, mnist_vae_float16.tflite,
mnist_vae_int8.tflite. The signatures are listed in tfvae/export.py.
"""

import json
import os
import sys

from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "The .keras file of a trained tfvae.VAE.")
flags.DEFINE_string("base_dir", "saved_models",
                    "Models land in <base_dir>/<name>/<version>.")
flags.DEFINE_string("name", "vae",
                    "Model name (a folder under base_dir; TFLite file stem).")
flags.DEFINE_integer("version", None, "Version folder; default: the next free integer.")
flags.DEFINE_list("tflite", ["float32"],
                  "TFLite files to write: any of float32, float16, int8; empty for none.")
flags.DEFINE_string("metadata", None,
                    "Optional JSON file whose entries are added to metadata.json "
                    "(e.g. test ELBO and NLL of the run).")
flags.mark_flag_as_required("checkpoint")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if not os.path.isfile(FLAGS.checkpoint):
        sys.exit(f"Checkpoint {FLAGS.checkpoint} does not exist.")
    extra = None
    if FLAGS.metadata:
        with open(FLAGS.metadata, encoding="utf-8") as f:
            extra = json.load(f)

    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # no INFO line per saved function
    import keras  # after flag parsing, so that --help is fast
    import tfvae  # noqa: F401  (registers the tfvae classes for load_model)
    from tfvae import export

    model = keras.saving.load_model(FLAGS.checkpoint)
    paths = export.export_model(model, base_dir=FLAGS.base_dir, name=FLAGS.name,
                                version=FLAGS.version, tflite=FLAGS.tflite,
                                metadata=extra)
    for kind, path in paths.items():
        print(f"{kind}: {path}")


if __name__ == "__main__":
    app.run(main)
