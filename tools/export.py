r"""Export a trained `.keras` file, run directory or preset: SavedModel (TF Serving) + TFLite.

    python -m tools.export --checkpoint=runs/mnist --base_dir=saved_models \
        --name=mnist_vae --tflite=float32,float16,int8

writes saved_models/mnist_vae/<version>/ (next free integer unless --version) holding
the SavedModel, metadata.json, mnist_vae.keras and mnist_vae.tflite,
mnist_vae_float16.tflite, mnist_vae_int8.tflite. Re-export a shipped model with this
version, keeping its measured figures (--metadata: an older metadata.json's entries,
refreshed where they describe the model and the export; a run directory's dataset and
class names come from its metrics.json):

    python -m tools.export --checkpoint=hvae_binarized_mnist --name=hvae_binarized_mnist \
        --metadata=saved_models/hvae_binarized_mnist/2/metadata.json \
        --tflite=float32,float16,int8

The signatures are listed in tfvae/export.py. The version folder appears whole or not
at all. Bad input (a missing or unreadable checkpoint or --metadata file, a taken
--version) ends with one line `tools.export: error: ...` and status 1, Ctrl-C with
one line and status 130.
"""

import json
import os

from absl import app, flags

from tfvae import cli
from tools import common

PROGRAM = "tools.export"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
flags.DEFINE_string("checkpoint", None, "The .keras file of a trained tfvae.VAE, a "
                    "trainer's run directory (its model.keras, else best.keras), a "
                    "version folder holding a .keras file or a preset name.")
flags.DEFINE_string("base_dir", "saved_models",
                    "Models land in <base_dir>/<name>/<version>.")
flags.DEFINE_string("name", "vae",
                    "Model name (a folder under base_dir; TFLite file stem).")
flags.DEFINE_integer("version", None, "Version folder; default: the next free integer.",
                     lower_bound=1)
flags.DEFINE_list("tflite", ["float32"],
                  "TFLite files to write: any of float32, float16, int8; empty for none.")
flags.DEFINE_string("metadata", None,
                    "Optional JSON file whose entries are added to metadata.json "
                    "(e.g. test ELBO and NLL of the run, or an older export's "
                    "metadata.json: its model and export entries are replaced).")
flags.mark_flag_as_required("checkpoint")


@cli.interruptible(PROGRAM, "no version folder was written (an export appears "
                            "whole or not at all).")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    try:
        extra = read_metadata(FLAGS.metadata) if FLAGS.metadata else {}
        model, location = common.load_keras(FLAGS.checkpoint)
        extra = {**run_record(location["path"]), **extra}
    except (OSError, ValueError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    from tfvae import export

    try:
        paths = export.export_model(model, base_dir=FLAGS.base_dir, name=FLAGS.name,
                                    version=FLAGS.version, tflite=FLAGS.tflite,
                                    metadata=extra)
    except (ValueError, OSError) as error:
        cli.fail(PROGRAM, f"{error} (nothing was written)")
    for kind, path in paths.items():
        print(f"{kind}: {path}")


def run_record(checkpoint):
    """The dataset and class names that the trainer's metrics.json beside `checkpoint`
    records (a run directory's), for metadata.json; {} elsewhere."""
    from tfvae import rundir

    try:
        metrics = rundir.read_json(os.path.join(os.path.dirname(checkpoint),
                                                rundir.METRICS), {})
    except (OSError, ValueError):  # unreadable: the model still exports
        return {}
    return {key: metrics[key] for key in ("dataset", "class_names")
            if isinstance(metrics, dict) and metrics.get(key)}


def read_metadata(path):
    """The JSON object in `path`, for metadata.json."""
    try:
        with open(path, encoding="utf-8") as f:
            extra = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"--metadata {path} is not JSON ({error}).") from None
    if not isinstance(extra, dict):
        raise ValueError(f"--metadata {path} must hold a JSON object, not "
                         f"{type(extra).__name__}.")
    return extra


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
