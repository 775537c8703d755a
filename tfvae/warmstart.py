"""Warm start: a new model from the weights of a saved one whose architecture differs
by added, removed or changed layers (`python -m tfvae.train --init_from=PATH`).

The matching rule: a weight of the target model takes the value of the source
model's weight with the same path and the same shape. A path is Keras 3's
`variable.path` (layer names, outer first, e.g. `decoder/hidden_0/kernel`) without
the model's own name in front, which a model built in its name scope carries
(`vae/decoder/...`) and a model loaded from a .keras file does not. tfvae names its
layers, so one architecture has the same paths in every process and build.

A target weight whose path the source lacks is *new*, one whose path the source has
with another shape is *skipped*: both keep their initialisation. Source weights that
no target weight matches are *unused* (removed layers). Values are cast to the
target's dtype (e.g. a float32 checkpoint into bfloat16 weights; a mixed-precision
model's weights are float32 anyway). Only weights are copied: no optimizer state,
step count or learning-rate schedule. Copy before training: the optimizer's average
of the weights (`--use_ema`, `builders.EMAWarmup`) starts as the weights at step 0,
so it starts from the copied ones.

From a notebook:

    from tfvae import warmstart
    report = warmstart.copy_weights(keras.saving.load_model("runs/x/best.keras"), model)
    print(report.summary())
"""

import dataclasses
import os

import keras

from tfvae import checks, keras_files, rundir

# Names listed per kind of weight in the one-line summary; the rest are counted.
LISTED = 3


class NoMatchingWeights(ValueError):
    """No weight of the source fits the target: nothing would be copied."""


@dataclasses.dataclass
class WarmStartReport:
    """What `copy_weights` did, by weight path (`relative_path`)."""
    source: str
    weights: int  # of the target model
    copied: list = dataclasses.field(default_factory=list)
    new: list = dataclasses.field(default_factory=list)
    # {path: (source shape, target shape)}
    skipped: dict = dataclasses.field(default_factory=dict)
    unused: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)

    def summary(self):
        """One line: 'init_from SOURCE: copied 8 of 10 weights (2 new, ...; ...).'"""
        skipped = [f"{path} {_shape(a)} -> {_shape(b)}" for path, (a, b) in
                   self.skipped.items()]
        parts = [f"{len(self.new)} new, left at their initialisation{_listing(self.new)}",
                 f"{len(skipped)} skipped for shape{_listing(skipped)}",
                 f"{len(self.unused)} of the source's unused{_listing(self.unused)}",
                 *self.notes]
        return (f"init_from {self.source}: copied {len(self.copied)} of {self.weights} "
                f"weights ({'; '.join(parts)}).")

    def as_dict(self):
        """The report for JSON (metrics.json): counts, and every new, skipped and unused
        weight by path."""
        return {"source": self.source, "weights": self.weights,
                "copied": len(self.copied), "new": self.new,
                "skipped_for_shape": {path: [list(a), list(b)]
                                      for path, (a, b) in self.skipped.items()},
                "unused": self.unused, "notes": self.notes}


def _shape(shape):
    return "x".join(map(str, shape)) or "scalar"


def _listing(names):
    """': a, b, c and 4 more' (the first LISTED names), or '' for none."""
    if not names:
        return ""
    more = f" and {len(names) - LISTED} more" if len(names) > LISTED else ""
    return ": " + ", ".join(names[:LISTED]) + more


def relative_path(variable, model):
    """`variable.path` without `model`'s name in front (see the module docstring)."""
    return variable.path.removeprefix(f"{model.name}/")


def weights_by_path(model):
    """{relative path: weight} of `model.weights`; ValueError if two share a path."""
    weights = {relative_path(v, model): v for v in model.weights}
    if len(weights) < len(model.weights):
        raise ValueError(f"{model.name} has weights with the same path; warm starts "
                         "match weights by path.")
    return weights


def copy_weights(source_model, target_model, source_name=None):
    """Copies every weight of `source_model` into the weight of `target_model` with the
    same path and shape (the module docstring has the rule); returns a
    `WarmStartReport`. Raises `NoMatchingWeights`, before changing anything, when no
    weight fits. `source_name` names the source in the report (default: its name).
    """
    sources, targets = weights_by_path(source_model), weights_by_path(target_model)
    if not targets:
        raise ValueError(f"{target_model.name} has no weights yet: build it first.")
    report = WarmStartReport(source_name or source_model.name, len(targets))
    pairs = []
    for path, target in targets.items():
        found = sources.get(path)
        if found is None:
            report.new.append(path)
        elif tuple(found.shape) != tuple(target.shape):
            report.skipped[path] = (tuple(found.shape), tuple(target.shape))
        else:
            report.copied.append(path)
            pairs.append((found, target))
    report.unused = [path for path in sources if path not in targets]
    if not pairs:
        raise NoMatchingWeights(_no_match_message(report, len(sources)))
    for found, target in pairs:
        target.assign(keras.ops.cast(found.value, target.dtype))
    return report


def _no_match_message(report, source_weights):
    if not report.skipped:
        return (f"none of the {source_weights} weights of {report.source} has a path in "
                "this model: the models share no layer names (likely a different "
                "architecture).")
    path, (a, b) = next(iter(report.skipped.items()))
    return (f"no weight of {report.source} fits this model: the {len(report.skipped)} "
            f"that share a path all differ in shape (e.g. {path} {_shape(a)} -> "
            f"{_shape(b)}; likely other layer sizes or architecture).")


# -- from a file ------------------------------------------------------------------------

def source_file(path):
    """The .keras file that `path` names: itself, or a run directory's best.keras (a
    running trainer has written only that one), else its model.keras."""
    if os.path.isdir(path):
        for name in (rundir.BEST, rundir.FINAL):
            if os.path.isfile(os.path.join(path, name)):
                return os.path.join(path, name)
        raise checks.InputError(f"{path} is a directory without {rundir.BEST} or "
                                f"{rundir.FINAL}; give a run directory or a .keras file.")
    if not os.path.exists(path):
        raise checks.InputError(f"{path} does not exist.")
    if not path.endswith(".keras"):
        raise checks.InputError(f"{path} is neither a .keras file nor a run directory.")
    return path


def warm_start(model, path):
    """Copies the weights of the tfvae model at `path` (`source_file`) into `model`
    (`copy_weights`); returns the report. InputError (one line) if the file does not
    load or models images of another shape; NoMatchingWeights if nothing fits."""
    path = source_file(path)
    source = keras_files.load_keras_model(path)
    if tuple(source.image_shape) != tuple(model.image_shape):
        raise checks.InputError(
            f"{path} models images of shape {_shape(source.image_shape)}, this model "
            f"{_shape(model.image_shape)}; a warm start needs the same images.")
    report = copy_weights(source, model, source_name=path)
    likelihoods = source.decoder.likelihood, model.decoder.likelihood
    if likelihoods[0] != likelihoods[1]:
        report.notes.append("the likelihood changes from {} to {}".format(*likelihoods))
    return report
