"""Export a trained VAE: a SavedModel for TF Serving and TFLite files for devices.

Layout (TF Serving): `<base_dir>/<name>/<version>/` holds the SavedModel
(`saved_model.pb`, `variables/`), `metadata.json` (config, image shape, likelihood,
date, tfvae version), the TFLite files `<name>.tflite` (float32),
`<name>_float16.tflite`, `<name>_int8.tflite` (dynamic-range int8 weights) and
`<name>.keras` (config and weights: a preset, `tfvae.presets`). TF Serving ignores
the extra files. A version folder appears whole or not at all
(`export_model` writes a hidden temporary folder and renames it).

SavedModel signatures (tensors only; images float32 [batch, H, W, C] in [0, 1], z
[batch, D]; the signatures declare these shapes with a free batch):

    serving_default = sample  num_samples (int32 scalar, 1 to checks.MAX_SAMPLES)
                                 -> images (mean of p(x|z)), z; and for a
                                    discretized likelihood or an autoregressive
                                    head draws, images drawn from p(x|z)
                                    (levels / 255; a head's binary pixels)
    encode       images              -> loc, scale of q(z|x)
    decode       z                   -> images, and logits (Bernoulli), loc, scale
                                        (Gaussian) or mixture_logits, loc, scale
                                        [, coefficients] (discretized logistic)
    reconstruct  images              -> images: decode of the posterior mean
    log_prob     images, num_samples -> log_prob, the IWAE bound (Burda et al. 2016)
                     log p(x) >= log 1/k sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x)
    elbo         images              -> elbo, distortion, rate per image (nats)
    sample_at_temperature  num_samples, temperature [layers] -> as `sample`, each
                     layer's prior draw moved toward its mean, m + t (z - m) (models
                     whose priors are all diagonal Gaussians; `VAE.sample`'s temperature)
    sample_guided  num_samples, temperature [layers], guidance, image_guidance
                     (float32 scalars >= 0), labels -> as `sample`, with
                     classifier-free guidance of weight w of the codes and v of the
                     image (`guidance.py`; class-conditional models trained with
                     context_dropout > 0)

A conditional model's signatures all take one more input: `labels` (int32 [batch],
class ids 0..K-1; for `sample` one per sample, or one for all) for a class-conditional
model, or `context` (float32 [batch, C]) for a model of context vectors; `log_prob`
and `elbo` are then of log p(x|c). Labels out of range or of the wrong length fail
with one readable line, like bad images.

`log_prob` draws the k samples in chunks of at most `log_prob_rows` (sample, image)
pairs inside a `tf.while_loop` and keeps a running logsumexp, so memory stays bounded
for any k (k = 5000 on a batch of images is fine).

Sampling uses built-in ops only, so that the TFLite file needs no Flex delegate:
p(z) is written as a mixture sum_k pi_k N(m_k, diag(s_k^2)) (one component for the
standard normal), a component is drawn by Gumbel-max, k = argmax_k(log pi_k - log(-log
u_k)) with u_k ~ U(0, 1), and z = m_k + s_k * eps with eps ~ N(0, I) from
`tf.random.normal`; a conditional prior p(z|c) is one Gaussian per sample. The draws
of a discretized likelihood take the same built-in ops (`discretized.py`: Gumbel-max
over the mixture logits, logistic noise log u - log(1 - u), rounding). The TFLite
file holds `sample`, `decode` and, where the SavedModel has them, `sample_at_temperature`
and `sample_guided` (with `labels` when conditional);
LiteRT raises no assertion, so there a label outside 0..K-1 gives NaN images instead.

An autoregressive decoder (`pixelcnn.py`) has no closed-form mean: `sample`, `decode`
and `reconstruct` return its `mean()`, the conditional probabilities along the greedy
path (deterministic), and `decode`'s `logits` are those along that path; `sample`'s
`draws` are ancestral draws x ~ p(x|z), binary images of the model's distribution
(thresholds from `tf.random.uniform`). Each path takes one pass of the head per pixel
in a `tf.while_loop`, which TFLite runs as its WHILE op with built-in ops only (so
`sample` runs two such loops); `log_prob` and `elbo` stay one parallel pass.

Variables: the exported module tracks the raw `tf.Variable`s behind the Keras
weights (not the Keras layers), so the TF1 session loader that TF Serving and
`saved_model_cli run` use finds them, and each is stored once.
"""

import datetime
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import uuid

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import checks, distributions, heads, objectives, priors, user_files
from tfvae.guidance import guided_likelihood
from tfvae.rundir import METADATA_FILE
from tfvae.version import __version__

tfd = tfp.distributions

QUANTIZATIONS = ("float32", "float16", "int8")
TFLITE_SIGNATURES = ("sample", "decode", "sample_at_temperature",
                     "sample_guided")  # those the SavedModel has
# Largest number of (sample, image) pairs one log_prob chunk decodes at once. With the
# 784-500-500-50 MLP VAE, k = 5000 on 100 MNIST images raised the peak memory by
# about 270 MB (and by 740 MB before the loop ran one chunk at a time).
LOG_PROB_ROWS = 8192


# -- the prior as a mixture of diagonal Gaussians, sampled with built-in ops ----------

def prior_mixture(model, prior):
    """The top prior distribution `prior` as (logits [K], loc [K, D], scale [K, D]), as
    the model's prior declares (`priors.Prior.mixture_parameters`)."""
    declared = getattr(model.prior, "mixture_parameters", priors.mixture_parameters)
    return declared(prior)


def sample_mixture(logits, loc, scale, num_samples):
    """num_samples draws z [n, D] of the mixture, with TFLite built-in ops only."""
    eps = tf.random.normal(tf.stack([num_samples, tf.shape(loc)[1]]))
    if loc.shape[0] == 1:
        return loc[0] + scale[0] * eps
    tiny = np.finfo(np.float32).tiny
    u = tf.random.uniform(tf.stack([num_samples, tf.shape(logits)[0]]), minval=tiny)
    component = tf.argmax(logits - tf.math.log(-tf.math.log(u)), axis=1,
                          output_type=tf.int32)
    return tf.gather(loc, component) + tf.gather(scale, component) * eps


# -- the exported module ----------------------------------------------------------------

def _checked(tensor, ok, message):
    """`tensor`, or the error `message` (a list of strings and tensors) unless `ok`.

    A `tf.cond`, not control dependencies: the data flows through the check, so no
    graph optimization can run its consumers first. (With control dependencies and
    the full static shape in the signature, grappler merged the checking reshape
    into the encoder's and a wrong shape crashed there before the assert fired.)
    """
    def fail():
        with tf.control_dependencies([tf.debugging.Assert(False, message, summarize=8)]):
            return tf.identity(tensor)

    return tf.cond(ok, lambda: tf.identity(tensor), fail)


def _check_temperature(temperature, num_layers):
    """temperature [num_layers] after a run-time check of its size and values (the
    signature declares [None]: a static length would let grappler fold the check)."""
    ok = tf.logical_and(tf.equal(tf.size(temperature), num_layers), tf.reduce_all(
        tf.logical_and(temperature > 0, tf.math.is_finite(temperature))))
    checked = _checked(temperature, ok, [
        f"temperature must be {num_layers} positive numbers, one per stochastic layer, "
        "top first; got", temperature])
    # Padded, so that no slice of it can fail before the check has said why.
    return tf.concat([checked, tf.ones([num_layers])], 0)[:num_layers]


def _check_guidance(guidance, name="guidance"):
    ok = tf.logical_and(guidance >= 0, tf.math.is_finite(guidance))
    return _checked(guidance, ok, [f"{name} must be a number >= 0; got", guidance])


def _check_num_samples(num_samples, maximum=None):
    ok = tf.logical_and(num_samples > 0, num_samples <= (maximum or num_samples))
    return _checked(num_samples, ok, [
        f"{checks.count_message('num_samples', maximum)}, as an int32 scalar; got",
        num_samples])


def _check_shape(tensor, name, shape):
    """`tensor` [batch, *shape] after a readable run-time check of its shape.

    Only run-time values are compared: grappler folds what the static signature
    shape implies (such as the rank), so a check built on it would pass any input.
    """
    actual = tf.shape(tensor)
    # Padded so that indexing cannot fail whatever the rank of the input.
    padded = tf.concat([actual, tf.zeros([len(shape) + 1], tf.int32)], axis=0)
    ok = tf.logical_and(tf.equal(tf.size(tensor), padded[0] * math.prod(shape)),
                        tf.reduce_all(tf.equal(padded[1:len(shape) + 1], shape)))
    checked = _checked(tensor, ok, [f"{checks.shape_message(name, shape)}, got", actual])
    return tf.reshape(checked, [-1, *shape])


def _check_images(images, image_shape):
    """Readable run-time errors for images of the wrong shape, NaN or out of range."""
    images = _check_shape(images, "images", image_shape)
    for bad, found in ((tf.math.is_nan(images), "NaN"),
                       (images < 0.0, "a value below 0"),
                       (images > 1.0, "a value above 1 (divide uint8 images by 255)")):
        # NaN compares False, so only the first check reports it.
        images = _checked(images, tf.logical_not(tf.reduce_any(bad)),
                          [f"{checks.RANGE}; found {found}"])
    return images


def _check_context(model, labels, count, allow_one=False):
    """A conditional model's `labels` (or `context`) for `count` images or samples,
    after a readable run-time check; broadcast from one when `allow_one`."""
    one = " (or one for all)" if allow_one else ""
    rows = tf.shape(labels)[0] if model.context_dim else tf.size(labels)
    ok = tf.logical_or(tf.equal(rows, count), tf.logical_and(allow_one, tf.equal(rows, 1)))
    if model.num_classes:
        ok = tf.logical_and(ok, tf.reduce_all((labels >= 0) & (labels < model.num_classes)))
        labels = _checked(labels, ok, [f"{checks.labels_rule(model.num_classes)}, one "
                                       f"per image or sample{one}; got", labels])
        return tf.broadcast_to(tf.reshape(labels, [-1]), tf.reshape(count, [1]))
    labels = _check_shape(labels, "context", (model.context_dim,))
    ok = tf.logical_and(ok, tf.reduce_all(tf.math.is_finite(labels)))
    labels = _checked(labels, ok, [f"{checks.FINITE_CONTEXT}, one row per image or "
                                   f"sample{one}; got shape", tf.shape(labels)])
    return tf.broadcast_to(labels, tf.stack([count, model.context_dim]))


def _nan_outside_classes(images, labels, num_classes):
    """`images` [batch, H, W, C], NaN where their label is outside 0..num_classes-1.

    TFLite keeps no assertion (LiteRT cannot raise one), so a .tflite file called
    directly with label 12 or -1 would return plausible class-less images (a one-hot
    of zeros); a range test and `tf.where`, built-in ops, make the misuse visible.
    The SavedModel's `_check_context` fails first, in one readable line.
    """
    valid = tf.logical_and(labels >= 0, labels < num_classes)
    return tf.where(tf.reshape(valid, [-1, 1, 1, 1]), images,
                    tf.constant(np.nan, images.dtype))


def _normal_draw(prior):
    """One draw per batch entry of a diagonal Gaussian prior (built-in ops only)."""
    loc, scale = priors.diagonal_normal(prior)
    return loc + scale * tf.random.normal(tf.shape(loc))


def _prior_likelihood(model, num_samples, context, temperature=None):
    """(p(x|z), codes z [n, D]) of z drawn from the prior with built-in ops, each
    layer's draw at its `temperature` [layers] when given."""
    def choose(index, posterior, prior):
        if index == 0 and not model.conditional_prior:
            z = sample_mixture(*prior_mixture(model, prior), num_samples)
        else:
            z = _normal_draw(prior)
        if temperature is not None:
            z = distributions.at_temperature(prior, z, temperature[index])
        return z, None

    layers, inputs = model.walk(None, choose, context)
    codes = tf.concat([layer["z"] for layer in layers], axis=-1)
    return model.decoder(inputs, training=False), codes


def signature_name(metric):
    """A metric's name as a signature output: "rate/1" -> "rate_1"."""
    return metric.replace("/", "_")


def _base_gaussian(posterior):
    """The diagonal Gaussian of a posterior head (an IAF's base distribution)."""
    return posterior if heads.is_diagonal_gaussian(posterior) else posterior.base_distribution


def encoding(model, codes, layers):
    """`encode`'s outputs: loc and scale of each layer's (base) Gaussian posterior.

    One layer with a Gaussian posterior: {"loc", "scale"}. A hierarchy names them by
    layer, "loc_1", "scale_1" (next to x) up to "loc_L", "scale_L", and adds "code",
    the posterior codes of all layers top first (what `decode` takes); an IAF
    posterior adds its "code" too, the flow's image of the base mean.
    """
    if model.num_layers == 1 and heads.is_diagonal_gaussian(layers[0]["posterior"]):
        base = layers[0]["posterior"].distribution
        return {"loc": base.loc, "scale": base.scale}
    outputs = {"code": codes}
    for index, layer in enumerate(layers):
        base = _base_gaussian(layer["posterior"]).distribution
        suffix = "" if model.num_layers == 1 else f"_{model.num_layers - index}"
        outputs.update({f"loc{suffix}": base.loc, f"scale{suffix}": base.scale})
    return outputs


def serving_module(model, log_prob_rows=LOG_PROB_ROWS):
    """A `tf.Module` with the signature functions of `model`, ready to save.

    Its attributes `sample`, `encode`, `decode`, `reconstruct`, `log_prob` and `elbo`
    are `tf.function`s with fixed input signatures (`signatures(module)` gives the
    SavedModel signatures). The Keras model is only captured by the functions; the
    module tracks the raw variables, so each is saved once and the TF1 loader finds it.
    """
    # The real shapes, batch free; the checks run on run-time shapes (`_checked`).
    image_spec = tf.TensorSpec([None, *model.image_shape], tf.float32, name="images")
    z_spec = tf.TensorSpec([None, model.latent_dim], tf.float32, name="z")
    count_spec = tf.TensorSpec([], tf.int32, name="num_samples")
    # The context's input: last in every signature of a conditional model.
    context_spec = [tf.TensorSpec([None], tf.int32, name="labels")] if model.num_classes \
        else [tf.TensorSpec([None, model.context_dim], tf.float32, name="context")] \
        if model.context_dim else []
    log_prob_rows = int(log_prob_rows)

    def static_images(images):
        """[batch, H, W, C] with H, W, C declared (a conv decoder's maps leave them
        free, and a .tflite file's outputs would say -1 x -1)."""
        return tf.reshape(images, [-1, *model.image_shape])

    def checked(images, labels):
        """The model's inputs: checked images, with their checked labels if any."""
        images = _check_images(images, model.image_shape)
        if not context_spec:
            return images
        return {"images": images, model.context_key: _check_context(
            model, labels, tf.shape(images)[0])}

    def sample(num_samples, labels=None):
        return draw(num_samples, labels)

    def sample_at_temperature(num_samples, temperature, labels=None):
        return draw(num_samples, labels, _check_temperature(temperature, model.num_layers))

    def sample_guided(num_samples, temperature, guidance, image_guidance, labels):
        return draw(num_samples, labels, _check_temperature(temperature, model.num_layers),
                    (_check_guidance(guidance),
                     _check_guidance(image_guidance, "image_guidance")))

    def draw(num_samples, labels, temperature=None, guidance=None):
        num_samples = _check_num_samples(num_samples, checks.MAX_SAMPLES)
        if context_spec:
            labels = _check_context(model, labels, num_samples, allow_one=True)
        context = None if not context_spec else model.given_context(labels, num_samples)
        if guidance is not None:
            likelihood, codes = guided_likelihood(model, num_samples, context,
                                                  temperature, *guidance)
        else:
            likelihood, codes = _prior_likelihood(model, num_samples, context, temperature)
        outputs = {"images": static_images(likelihood.mean())}
        if model.discretized or model.autoregressive:  # unseeded: TFLite built-in ops
            outputs["draws"] = static_images(likelihood.sample())
        if model.num_classes:
            outputs = {name: _nan_outside_classes(images, labels, model.num_classes)
                       for name, images in outputs.items()}
        return {**outputs, "z": codes}

    def encode(images, labels=None):
        codes, layers, _ = model.posterior_codes(checked(images, labels), training=False)
        return encoding(model, codes, layers)

    def decode(z, labels=None):
        z = _check_shape(z, "z", (model.latent_dim,))
        z = _checked(z, tf.reduce_all(tf.math.is_finite(z)),
                     [f"{checks.FINITE_CODES}; found NaN or Inf"])
        if context_spec:
            labels = _check_context(model, labels, tf.shape(z)[0])
        likelihood = model.decode(z, labels, training=False)
        images = static_images(likelihood.mean())
        if model.num_classes:
            images = _nan_outside_classes(images, labels, model.num_classes)
        return {"images": images,
                **distributions.likelihood_parameters(likelihood)}

    def reconstruct(images, labels=None):
        return {"images": model.reconstruct(checked(images, labels))}

    def log_prob(images, num_samples, labels=None):
        images, context = model.split_inputs(checked(images, labels))
        num_samples = _check_num_samples(num_samples)
        features = model.encoder.features(images, training=False, context=context)
        chunk = tf.maximum(1, log_prob_rows // tf.maximum(1, tf.shape(images)[0]))

        def chunk_log_weights(size, seed):
            del seed
            return model.log_weight_terms(images, size, training=False, features=features,
                                          context=context)["log_weights"]

        return {"log_prob": objectives.chunked_log_mean_exp(chunk_log_weights,
                                                            num_samples, chunk)}

    def elbo(images, labels=None):
        terms = model.elbo(checked(images, labels))
        return {signature_name(k): v for k, v in terms.items()}

    module = tf.Module(name="vae_export")
    module.model_variables = [w.value for w in model.weights]
    functions = [(sample, [count_spec]), (encode, [image_spec]), (decode, [z_spec]),
                 (reconstruct, [image_spec]), (log_prob, [image_spec, count_spec]),
                 (elbo, [image_spec])]
    if samples_at_temperature(model):
        temperature_spec = tf.TensorSpec([None], tf.float32, "temperature")
        functions.append((sample_at_temperature, [count_spec, temperature_spec]))
        if model.context_dropout:
            functions.append((sample_guided, [count_spec, temperature_spec, *(
                tf.TensorSpec([], tf.float32, name)
                for name in ("guidance", "image_guidance"))]))
    for function, spec in functions:
        setattr(module, function.__name__,
                tf.function(function, input_signature=spec + context_spec))
    return module


def samples_at_temperature(model):
    """Whether every prior of `model` is a diagonal Gaussian, which `VAE.sample` and
    the export's `sample_at_temperature` can cool (a mixture prior cannot). The top
    prior decides: the layers below draw from Gaussian prior heads by construction."""
    return getattr(model.prior, "gaussian", False)


def signatures(module):
    """SavedModel signature key -> concrete function of a `serving_module`."""
    names = ("sample", "encode", "decode", "reconstruct", "log_prob", "elbo",
             "sample_at_temperature", "sample_guided")
    functions = {name: getattr(module, name).get_concrete_function() for name in names
                 if hasattr(module, name)}
    return {"serving_default": functions["sample"], **functions}


def export_saved_model(model, export_dir, log_prob_rows=LOG_PROB_ROWS):
    """Writes the SavedModel of `model` (signatures in the module docstring)."""
    module = serving_module(model, log_prob_rows)
    tf.saved_model.save(module, export_dir, signatures=signatures(module))
    return export_dir


# -- TFLite -----------------------------------------------------------------------------

def tflite_from_saved_model(saved_model_dir, path, quantization="float32"):
    """Converts the `sample` and `decode` signatures of an exported SavedModel.

    quantization: "float32", "float16" (weights stored as float16) or "int8"
    (dynamic-range: int8 weights, float activations). Built-in ops only.
    """
    checks.choice("quantization", quantization, QUANTIZATIONS)
    keys = [key for key in TFLITE_SIGNATURES if key in saved_signatures(saved_model_dir)]
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir,
                                                         signature_keys=keys)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantization != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantization == "float16":
        converter.target_spec.supported_types = [tf.float16]
    flatbuffer = converter.convert()  # Before opening: a failure leaves no file.
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def saved_signatures(saved_model_dir):
    """The signature keys of a SavedModel, read from its saved_model.pb (no load)."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        saved.ParseFromString(f.read())
    return set(saved.meta_graphs[0].signature_def)


def tflite_path(version_dir, name, quantization):
    suffix = "" if quantization == "float32" else f"_{quantization}"
    return os.path.join(version_dir, f"{name}{suffix}.tflite")


# -- metadata and the TF Serving layout ------------------------------------------------

def source_commit():
    """The git commit of the tfvae checkout ("<sha>-dirty" with local changes), or None
    outside a git checkout."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if not os.path.exists(os.path.join(root, ".git")):
        return None
    command = ["git", "-C", root, "describe", "--always", "--dirty", "--abbrev=40",
               "--exclude=*"]  # the full sha, never a tag name
    try:
        return subprocess.run(command, check=True, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def signature_summary(model):
    """Signature key -> "inputs -> outputs" with shapes and bounds."""
    image_dims = f"[batch, {', '.join(map(str, model.image_shape))}]"
    images = f"images {image_dims}"
    z = f"z [batch, {model.latent_dim}]"
    if model.num_layers > 1:
        z += f" (layers {', '.join(map(str, model.latent_dims))}, top first)"
    params = ("logits" if model.decoder.likelihood == "bernoulli" else "loc, scale")
    sample = f"num_samples (int32 scalar, 1 to {checks.MAX_SAMPLES}) -> images, {z}"
    if model.autoregressive:
        params += " along the greedy path of the autoregressive head"
        sample = sample.replace(" -> images, ", " -> images (along the greedy path), "
                                f"draws {image_dims} (ancestral draws of p(x|z)), ", 1)
    params += f" (each {image_dims})"
    if model.discretized:
        params, sample = _discretized_summary(model, image_dims, sample)
    rates = ", ".join(signature_name(name) for name in model.metric_names[1:])
    if model.num_layers > 1:
        encoded = (f"code [batch, {model.latent_dim}], and loc_l, scale_l of layer l "
                   f"= 1 (next to x) .. {model.num_layers}")
    else:
        encoded = f"loc, scale [batch, {model.latent_dim}]"
        if not model.encoder.diagonal_gaussian:
            encoded += " (of the flow's base Gaussian), code"
    summary = {
        "sample": sample,
        "encode": f"{images} -> {encoded}",
        "decode": f"{z} -> images, {params}",
        "reconstruct": f"{images} -> images",
        "log_prob": f"{images}, num_samples (int32 scalar) -> log_prob [batch]",
        "elbo": f"{images} -> elbo, {rates} [batch]",
    }
    if samples_at_temperature(model):
        summary["sample_at_temperature"] = sample.replace(" -> ", (
            f", temperature [{model.num_layers}] (float32 > 0, one per stochastic layer, "
            "top first: every prior scale times t) -> "), 1)
        if model.context_dropout:
            summary["sample_guided"] = summary["sample_at_temperature"].replace(
                " -> ", ", guidance, image_guidance (float32 scalars >= 0: "
                "classifier-free guidance weights of the codes and the image) -> ", 1)
    if model.context_width:  # the context's input goes last, before the arrow
        context = (f"labels [batch] (int32 class ids 0..{model.num_classes - 1})"
                   if model.num_classes else f"context [batch, {model.context_dim}]")
        summary = {name: text.replace(" -> ", f", {context} -> ", 1)
                   for name, text in summary.items()}
        summary["sample"] = summary["sample"].replace("[batch]", "[num_samples or 1]")
    return {"serving_default": summary["sample"], **summary}


def _discretized_summary(model, image_dims, sample):
    """`decode`'s parameters and `sample`'s outputs for a discretized likelihood."""
    height, width, channels = model.image_shape
    k = model.decoder.likelihood_components
    params = (f"mixture_logits [batch, {height}, {width}, {k}], loc, scale [batch, "
              f"{height}, {width}, {channels}, {k}] (on the [0, 1] scale)")
    if channels > 1:
        params += (f", coefficients [batch, {height}, {width}, "
                   f"{channels * (channels - 1) // 2}, {k}]")
    sample = sample.replace(" -> images, ", f" -> images (the mean), draws {image_dims}"
                            " (drawn from p(x|z): levels / 255), ", 1)
    return params, sample


def likelihood_metadata(model):
    """What `metadata.json` says about the likelihood and the units of its figures;
    for a discretized likelihood how they convert to bits per dimension."""
    info = {"likelihood": model.decoder.likelihood,
            "figures": distributions.FIGURES[model.decoder.likelihood]}
    if model.discretized:
        dims = int(np.prod(model.image_shape))
        info.update(likelihood_components=model.decoder.likelihood_components,
                    num_dims=dims, bits_per_dim=f"-log_prob / ({dims} ln 2)")
    return info


def model_metadata(model):
    """A JSON-serializable description of `model` for `metadata.json`."""
    return {
        "tfvae_version": __version__,
        "tfvae_commit": source_commit(),
        "export_date": datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"),
        "image_shape": list(model.image_shape),
        **likelihood_metadata(model),
        "latent_dim": model.latent_dim,
        "latent_dims": list(model.latent_dims),
        "posterior": model.encoder.posterior,
        "prior": type(model.prior).__name__,
        "num_classes": model.num_classes,
        "context_dim": model.context_dim,
        "max_samples": checks.MAX_SAMPLES,
        "trained_dtype_policy": model.dtype_policy.name,
        "num_weights": int(sum(np.prod(w.shape) for w in model.weights)),
        "signatures": signature_summary(model),
        "model_config": json.loads(json.dumps(model.get_config(), default=str)),
    }


def next_version(model_dir):
    """1 + the largest integer version folder under `model_dir` (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if re.fullmatch(r"\d+", d)]
    return max(versions, default=0) + 1


def version_folder(base_dir, name, version=None):
    """(version, `<base_dir>/<name>/<version>`): the next free version when None.

    Raises when that folder holds anything: an export never overwrites a version.
    """
    model_dir = os.path.join(base_dir, name)
    version = next_version(model_dir) if version is None else int(version)
    if version <= 0:
        raise ValueError(f"version must be a positive integer, got {version!r}.")
    version_dir = os.path.join(model_dir, str(version))
    if os.path.exists(version_dir) and os.listdir(version_dir):
        raise FileExistsError(f"{version_dir} exists and is not empty; pick another "
                              f"version (0 or None: the next free one).")
    return version, version_dir


def float32_copy(model):
    """`model` itself when it computes in float32, else a float32 copy of it.

    A model trained under a mixed_float16 / mixed_bfloat16 policy computes its layers
    in 16 bits; the TFLite converter has no built-in float16 MatMul, and the export
    contract is float32 anyway. The copy is rebuilt from the config with every dtype
    policy set to float32 (variables are float32 under mixed precision too) and takes
    the same weights.
    """
    if all(layer.compute_dtype == "float32" for layer in model._flatten_layers()):
        return model
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # for sublayers made in __init__
    try:
        return _rebuilt(model, _float32_policies(model.get_config()))
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _rebuilt(model, config):
    """A new model of `model`'s class from `config`, holding `model`'s weights (and
    no optimizer)."""
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    return copy


def save_keras(model, path):
    """`model` as a `.keras` file of its config and weights, without the optimizer's
    state (which would double or triple the file): what `VAE.from_preset` loads."""
    user_files.save_model_whole(_rebuilt(model, model.get_config()), path)


def _float32_policies(config):
    """`config` with each serialized DTypePolicy replaced by "float32"."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy":
            return "float32"
        return {key: _float32_policies(value) for key, value in config.items()}
    if isinstance(config, list):
        return [_float32_policies(value) for value in config]
    return config


def export_model(model, base_dir="saved_models", name="vae", version=None,
                 tflite=("float32",), metadata=None, with_keras=True):
    """Exports `model` to `<base_dir>/<name>/<version>/` (TF Serving layout).

    The version folder appears whole or not at all: everything is written to a
    hidden temporary folder beside it (TF Serving serves only integer names), which
    is renamed at the end and removed if any step fails. A model computing in
    16 bits (mixed precision) is exported as its float32 copy (`float32_copy`).

    Args:
        model: a `tfvae.VAE`.
        base_dir, name: the model lands in `<base_dir>/<name>/<version>/`.
        version: positive integer; None for the next free one.
        tflite: quantizations of the TFLite files to write beside the SavedModel,
            any of "float32", "float16", "int8"; () for none.
        metadata: extra entries for `metadata.json` (e.g. training figures); the
            entries that describe the model and the export (`model_metadata`, name,
            version, files) are this export's, so an older export's metadata.json
            may be passed to carry its measured figures over.
        with_keras: also write `<name>.keras` (`save_keras`), which makes the
            version folder a preset (`tfvae.presets`).

    Returns:
        dict of written paths: "saved_model", "metadata", "tflite_<quantization>"
        and "keras" (with_keras).
    """
    tflite = (tflite,) if isinstance(tflite, str) else tuple(tflite)
    for quantization in tflite:
        checks.choice("quantization", quantization, QUANTIZATIONS)
    version, version_dir = version_folder(base_dir, name, version)
    model_dir = os.path.dirname(version_dir)
    os.makedirs(model_dir, exist_ok=True)
    # Not tempfile.mkdtemp: its mode 0700, kept through the rename, would hide the
    # version from a TF Serving running as another user; mkdir applies the umask.
    staging = os.path.join(model_dir, f".{version}.incomplete-{uuid.uuid4().hex[:8]}")
    os.mkdir(staging)
    try:
        files = {"tflite": {q: os.path.basename(tflite_path("", name, q))
                            for q in tflite}}
        if with_keras:
            files["keras"] = f"{name}.keras"
            save_keras(model, os.path.join(staging, files["keras"]))
        _write_version(float32_copy(model), staging, name, tflite, {
            **(metadata or {}), **model_metadata(model), "name": name,
            "version": version, **files})
        if os.path.isdir(version_dir):
            os.rmdir(version_dir)  # empty (checked above); rename needs it gone
        os.rename(staging, version_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    paths = {"saved_model": version_dir,
             "metadata": os.path.join(version_dir, METADATA_FILE)}
    for quantization in tflite:
        paths[f"tflite_{quantization}"] = tflite_path(version_dir, name, quantization)
    if with_keras:
        paths["keras"] = os.path.join(version_dir, f"{name}.keras")
    return paths


def _write_version(model, folder, name, tflite, info):
    """The SavedModel, the TFLite files and metadata.json of `model` in `folder`."""
    export_saved_model(model, folder)
    for quantization in tflite:
        tflite_from_saved_model(folder, tflite_path(folder, name, quantization),
                                quantization)
    with open(os.path.join(folder, METADATA_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2, default=str)
