"""The samplers of an exported VAE: a SavedModel folder or a .tflite file.

`load_sampler(path)` gives an object with `sample(n, labels=None)`,
`decode(z, labels=None)`, `reconstruct(images, labels=None)` (SavedModel only),
`image_shape`, `latent_dim`, `class_names` and `num_classes` (0: unconditional);
`sample(n, labels, temperature=t)` with t != 1 draws through `sample_at_temperature`,
t one number or one per stochastic layer (`num_layers`; None for an export without
that signature); `guidance=w` > 0 (or a pair (w, v), v guiding the image) through
`sample_guided` (classifier-free guidance, `tfvae.guidance`); `draws=True` returns
images drawn from p(x|z) instead of the likelihood's means (the `draws` output of a
discretized likelihood's or an autoregressive head's export).
Inputs are checked by the rules of `tfvae.checks` before anything runs: LiteRT
crashes or fails without a message on bad counts and codes, and runs no assertions,
so a conditional .tflite file's labels are checked against its metadata.json here.
The .tflite path needs only numpy and ai-edge-litert, not TensorFlow. No flags: the
tools that sample (`tools.sample`, `tools.label_consistency`) share these.
"""

import os

import numpy as np

from tfvae import checks
from tools.common import load_saved_model


def _class_names(folder, conditional, path):
    """The class names of a conditional export (its metadata.json), or None."""
    if not conditional:
        return None
    from tfvae import rundir
    metadata = rundir.read_json(os.path.join(folder, rundir.METADATA_FILE), {})
    count = metadata.get("num_classes")
    if not count:
        raise checks.InputError(f"{path} is conditional, but the metadata.json beside it "
                                "(num_classes) is missing; keep the export folder whole.")
    names = metadata.get("class_names") or [str(i) for i in range(count)]
    return tuple(str(name) for name in names)


def _num_layers(folder, declared):
    """The temperature input's length: as declared, else (a free length) the number
    of stochastic layers in the export's metadata.json."""
    if declared is not None and int(declared) >= 0:
        return int(declared)
    from tfvae import rundir
    dims = rundir.read_json(os.path.join(folder, rundir.METADATA_FILE), {}).get(
        "latent_dims")
    if not dims:
        raise checks.InputError(f"{folder}: the metadata.json beside the export "
                                "(latent_dims) is missing; keep the export folder whole.")
    return len(dims)


def _image_shape(folder, path):
    """The image shape an export's metadata.json records."""
    from tfvae import rundir
    shape = rundir.read_json(os.path.join(folder, rundir.METADATA_FILE), {}).get(
        "image_shape")
    if not shape:
        raise checks.InputError(f"{path} declares no image size, and the metadata.json "
                                "beside it (image_shape) is missing; keep the export "
                                "folder whole.")
    return tuple(int(d) for d in shape)


class _Conditional:
    """The labels of a sampler's calls: none for an unconditional export."""

    class_names = None

    @property
    def num_classes(self):
        return len(self.class_names) if self.class_names else 0

    num_layers = None  # the length of sample_at_temperature's temperature, if it has one
    guided = ()  # the guidance inputs of its sample_guided, if it has one
    drawn = False  # whether its samples come with `draws`, images drawn from p(x|z)

    def sample_output(self, draws):
        """The name of the sample output to return: "draws" (if the export has them)
        or "images" (the likelihood's means)."""
        if not draws:
            return "images"
        if not self.drawn:
            raise checks.InputError(
                f"{self.path} has no draws output: drop --draws (only exports of a "
                "discretized likelihood or an autoregressive head have one; a head's "
                "exported before 2026-12-07 gets it from tools.export).")
        return "draws"

    def sampling_inputs(self, num_samples, labels, temperature, guidance):
        """(signature name, inputs as numpy) of a draw, checked by `tfvae.checks`."""
        num_samples = checks.check_count(num_samples, maximum=checks.MAX_SAMPLES)
        inputs = {"num_samples": np.array(num_samples, np.int32),
                  **self._labels(labels, num_samples)}
        guidance = self.guidance_input(guidance)
        if guidance:
            return "sample_guided", {**inputs, **self.temperature_input(temperature),
                                     **guidance}
        if temperature == 1:
            return "sample", inputs
        return "sample_at_temperature", {**inputs, **self.temperature_input(temperature)}

    def temperature_input(self, temperature, name="temperature"):
        """{"temperature": float32 [num_layers]}, by `checks.layer_temperatures`."""
        if self.num_layers is None:
            raise checks.InputError(
                f"{self.path} has no sample_at_temperature signature (exported before "
                "it existed, or its prior is a mixture); give its .keras file.")
        return {"temperature": np.array(checks.layer_temperatures(
            temperature, self.num_layers, name), np.float32)}

    def guidance_input(self, guidance, name="guidance"):
        """{"guidance": w, "image_guidance": v} (float32 scalars) of w or (w, v) not
        both 0; {} for 0; InputError for a bad weight or an export without them."""
        weights = checks.check_guidance_value(guidance, name)
        if not any(weights):
            return {}
        if not self.guided:
            raise checks.InputError(
                f"{self.path} has no sample_guided signature (a class-conditional model "
                "trained with --context_dropout > 0 has it).")
        inputs = {"guidance": np.array(weights[0], np.float32)}
        if "image_guidance" in self.guided:
            inputs["image_guidance"] = np.array(weights[1], np.float32)
        elif weights[1]:
            raise checks.InputError(
                f"{self.path} was exported before image guidance: its sample_guided "
                "guides the codes only; re-export it with tools.export.")
        return inputs

    def _labels(self, labels, count):
        """{} or {"labels": int32 [count]} after the rules of `checks.as_labels`."""
        if not self.num_classes:
            if labels is not None:
                raise checks.InputError("the model is unconditional: it takes no labels.")
            return {}
        if labels is None:
            raise checks.InputError("the model is conditional: give labels (--labels, "
                                    "--image_labels or a labelled --dataset).")
        return {"labels": checks.as_labels(labels, self.num_classes, count)}

class SavedModelSampler(_Conditional):
    """The `sample` and `reconstruct` signatures of an exported SavedModel."""

    def __init__(self, path):
        import tensorflow as tf
        self._tf = tf
        self.path = path
        self.signatures = load_saved_model(path).signatures
        missing = {"sample", "reconstruct", "decode"} - set(self.signatures)
        if missing:
            raise checks.InputError(f"{path} is not a tfvae export: it lacks the "
                                    f"signatures {sorted(missing)}.")
        self.image_shape = tuple(self.signatures["sample"].structured_outputs[
            "images"].shape[1:])
        self.latent_dim = self.signatures["decode"].structured_input_signature[1][
            "z"].shape[-1]
        self.class_names = _class_names(path, "labels" in self.signatures[
            "sample"].structured_input_signature[1], path)
        if "sample_at_temperature" in self.signatures:
            self.num_layers = _num_layers(path, self.signatures["sample_at_temperature"].
                                          structured_input_signature[1][
                                              "temperature"].shape[0])
        if "sample_guided" in self.signatures:
            guided = self.signatures["sample_guided"].structured_input_signature[1]
            self.guided = tuple(guided)
        self.drawn = "draws" in self.signatures["sample"].structured_outputs

    def sample(self, num_samples, labels=None, temperature=1, guidance=0, draws=False):
        output = self.sample_output(draws)
        name, inputs = self.sampling_inputs(num_samples, labels, temperature, guidance)
        inputs = {key: self._tf.constant(value) for key, value in inputs.items()}
        return self.signatures[name](**inputs)[output].numpy()

    def reconstruct(self, images, labels=None):
        images = checks.as_images(images, self.image_shape)
        out = self.signatures["reconstruct"](images=self._tf.constant(images),
                                             **self._labels(labels, len(images)))
        return out["images"].numpy()

    def decode(self, z, labels=None):
        z = checks.as_codes(z, self.latent_dim)
        return self.signatures["decode"](z=self._tf.constant(z), **self._labels(
            labels, len(z)))["images"].numpy()


class TFLiteSampler(_Conditional):
    """The `sample` and `decode` signatures of an exported .tflite file, in the LiteRT
    interpreter."""

    def __init__(self, path, num_threads=1):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as error:
            raise ImportError("Running .tflite files needs the LiteRT interpreter: "
                              "pip install ai-edge-litert") from error
        self.path = path
        try:
            self.interpreter = Interpreter(model_path=path, num_threads=num_threads)
            self._decode = self.interpreter.get_signature_runner("decode")
            names = self.interpreter.get_signature_list()
            # `sample` is in every tfvae .tflite file (without it: the ValueError below).
            self._runners = {"sample": self.interpreter.get_signature_runner("sample")}
            for name in ("sample_at_temperature", "sample_guided"):
                if name in names:
                    self._runners[name] = self.interpreter.get_signature_runner(name)
            if "sample_at_temperature" in names:
                self.num_layers = _num_layers(os.path.dirname(path) or ".", self._runners[
                    "sample_at_temperature"].get_input_details()["temperature"][
                        "shape_signature"][0])
            if "sample_guided" in names:
                self.guided = tuple(self._runners["sample_guided"].get_input_details())
            self.drawn = "draws" in self._runners["sample"].get_output_details()
        except (ValueError, RuntimeError) as error:
            raise checks.InputError(f"{path} cannot be loaded as a tfvae .tflite file "
                                    f"({checks.first_line(error)}).") from None
        self.latent_dim = int(self._decode.get_input_details()["z"]["shape_signature"][-1])
        self.image_shape = tuple(int(d) for d in self._decode.get_output_details()[
            "images"]["shape_signature"][1:])
        if min(self.image_shape) < 0:  # a conv decoder's maps: -1 for height and width
            self.image_shape = _image_shape(os.path.dirname(path) or ".", path)
        # LiteRT runs no assertions: labels are checked here, against metadata.json.
        self.class_names = _class_names(os.path.dirname(path) or ".", "labels" in
                                        self._runners["sample"].get_input_details(),
                                        path)

    def sample(self, num_samples, labels=None, temperature=1, guidance=0, draws=False):
        # Checked before invoke: LiteRT segfaults on -1 and fails on 0 without a message.
        output = self.sample_output(draws)
        name, inputs = self.sampling_inputs(num_samples, labels, temperature, guidance)
        return self._runners[name](**inputs)[output]

    def decode(self, z, labels=None):
        # Before invoke: another width fails in XNNPack, one code [D] passes as [1, D].
        z = checks.as_codes(z, self.latent_dim)
        return self._decode(z=z, **self._labels(labels, len(z)))["images"]

    def reconstruct(self, images, labels=None):
        raise ValueError("A .tflite file holds only `sample` and `decode`; reconstruct "
                         "with the SavedModel folder.")


def load_sampler(path):
    """A `TFLiteSampler` for a .tflite file, else a `SavedModelSampler` (of a version
    folder, or of a preset name: `tfvae.presets`)."""
    from tfvae import presets

    path = presets.resolve(path)
    if path.endswith(".tflite"):
        if not os.path.isfile(path):
            raise checks.InputError(f"No TFLite file at {path}.")
        return TFLiteSampler(path)
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise checks.InputError(f"{path} is neither a .tflite file nor a SavedModel "
                                f"folder (no saved_model.pb).")
    return SavedModelSampler(path)


