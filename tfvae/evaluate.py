"""Evaluation of a trained VAE: marginal likelihood, test ELBO, latent statistics.

Importance-sampled marginal likelihood (Burda et al. 2016, eq. 8; Rezende et al. 2014):

    log p(x) ~= log 1/k sum_{i=1..k} w_i,   w_i = p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x).

It is the IWAE bound L_k: E[L_k] <= log p(x), non-decreasing in k, equal to the ELBO
in expectation at k=1, and consistent as k -> infinity. Papers report -L_5000 as the
test "NLL" in nats. k=5000 samples of a 784-dimensional likelihood do not fit in
memory at once, so the k samples are split into chunks of `chunk_size` and the sum
is accumulated with a running log-sum-exp (exact, not an approximation; `objectives.chunked_log_mean_exp`, which the exported
`log_prob` signature shares). The log-weights come from the model's one core,
`VAE.log_weight_terms`, for any depth of latent layers.

For a `VAE` the encoder's bottom-up pass runs once per batch of images; each chunk
samples the latent layers and runs the decoder, and the whole batch is one
XLA-compiled call. From a generic
callable `log_prob(images, num_samples) -> [B]` (e.g. the `log_prob` signature of an
exported SavedModel) each chunk's estimate L_c over s_c samples is combined as
log p(x) ~= logsumexp_c(L_c + log s_c) - log k.

Bits per dimension. A discretized likelihood (8-bit levels, `discretized.py`) gives
log-probabilities, so bits/dim = -log p(x) / (D ln 2) (`objectives.bits_per_dim`), of
the NLL and of the ELBO. For continuous (Gaussian-likelihood) models of 8-bit data
(Theis et al. 2016): when pixels x in {0..255} were dequantized and rescaled,
y = (x + u) / 256 with u ~ U[0, 1)^D, a density p(y) on [0, 1]^D gives the density
p(y) / 256^D on the original [0, 256)^D scale, whose negative log is an upper bound
on the discrete -log P(x). So

    bits/dim = (-log p(y) + D log 256) / (D log 2),

with -log p(y) in nats (the NLL or the negative ELBO) and D = H * W * C.

Active units (Burda et al. 2016, section 5.2): dimension u is active when
A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01, the variance over the data of the posterior mean.
"""

import dataclasses
import functools
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tfvae import data, distributions, objectives, resumable

tfd = tfp.distributions

ACTIVE_UNIT_THRESHOLD = 0.01
MAX_ROWS = 10_000  # decoder rows (samples x images) per compiled chunk, at most
LIVE_TENSORS = 2  # bytes per decoder row / its largest tensor's (measured: 1.25)
MEMORY_LIMIT_FILES = ("/sys/fs/cgroup/memory.max",
                      "/sys/fs/cgroup/memory/memory.limit_in_bytes")


@dataclasses.dataclass
class Estimate:
    """Per-image values of one quantity (nats) and the wall time it took."""

    values: np.ndarray
    seconds: float = 0.0

    @property
    def mean(self):
        return float(np.mean(self.values))

    @property
    def stderr(self):
        """Standard error of the mean over images."""
        n = len(self.values)
        return float(np.std(self.values, ddof=1) / math.sqrt(n)) if n > 1 else float("nan")

    def __str__(self):
        return f"{self.mean:.3f} +- {self.stderr:.3f} nats ({len(self.values)} images)"

    def summary(self):
        return {"mean": self.mean, "stderr": self.stderr,
                "num_images": int(len(self.values)), "seconds": self.seconds}


def bits_per_dim(log_px, num_dims, num_levels=256):
    """Nats per image on the [0, 1] scale -> bits per dimension of the 8-bit data.

    (-log_px + num_dims * log(num_levels)) / (num_dims * log 2): valid for data
    dequantized as y = (x + u) / num_levels, x in {0, ..., num_levels - 1}.
    `log_px` may be a number or an array (log p(x) or the ELBO, in nats) of a
    density; a log-probability (a discretized likelihood) takes
    `objectives.bits_per_dim` directly.
    """
    if num_dims <= 0 or num_levels <= 1:
        raise ValueError(f"bits_per_dim needs num_dims > 0 and num_levels > 1, got "
                         f"{num_dims} and {num_levels}.")
    log_px = np.asarray(log_px, np.float64)
    # The density on the scale of the levels, p(y) / num_levels^D, is a log-probability.
    return objectives.bits_per_dim(log_px - num_dims * math.log(num_levels), num_dims)


# -- data ------------------------------------------------------------------------


def _image_of(element):
    """The image tensor of a dataset element: x, (x, y, ...), {"image": x} or a
    conditional model's inputs {"images": x, "labels": y}."""
    if isinstance(element, dict):
        for key in ("images", "image"):
            if key in element:
                return element[key]
        raise ValueError(f"Dataset elements are dicts without an 'images' or 'image' "
                         f"key: {sorted(element)}.")
    if isinstance(element, (tuple, list)):
        return element[0]
    return element


def _float_images(images):
    """float32 images; integer pixels by the rule of `data.integer_images`."""
    images = tf.convert_to_tensor(images)
    return data.integer_images(images) if images.dtype.is_integer \
        else tf.cast(images, tf.float32)


def _as_batch(element):
    """A model's inputs from a batch: float32 images, or for a conditional model's
    {"images": x, "labels" or "context": ...} that dict with float32 images."""
    if isinstance(element, dict) and "images" in element:
        return {**element, "images": _float_images(element["images"])}
    return _float_images(_image_of(element))


def batches(data, batch_size):
    """Yields batches of at most `batch_size` from `data`: float32 images [b, H, W, C],
    or conditional inputs {"images": [b, H, W, C], "labels": [b]} (or "context").

    `data` is an array/tensor of images [N, H, W, C], a dict of such inputs (arrays),
    or a `tf.data.Dataset` of images, (images, labels), {"image", "label"} dicts or
    conditional inputs, batched or not.
    """
    if isinstance(data, tf.data.Dataset):
        spec = _image_of(data.element_spec)
        if spec.shape.rank == 4:
            data = data.unbatch()  # rebatched below: compiled calls see one shape
        elif spec.shape.rank != 3:
            raise ValueError(f"Expected images of rank 3 or batches of rank 4, got "
                             f"element shape {spec.shape}.")
        data = data.batch(batch_size)
        for element in data:
            yield _as_batch(element)
        return
    if isinstance(data, dict):
        inputs = {key: np.asarray(value) for key, value in data.items()}
        if np.asarray(_image_of(inputs)).ndim != 4:
            raise ValueError(f"Expected images [N, H, W, C], got an array of shape "
                             f"{np.shape(_image_of(inputs))}.")
        for start in range(0, len(_image_of(inputs)), batch_size):
            yield _as_batch({key: tf.constant(value[start:start + batch_size])
                             for key, value in inputs.items()})
        return
    array = np.asarray(data)
    if array.ndim != 4:
        raise ValueError(f"Expected images [N, H, W, C], got an array of shape "
                         f"{array.shape}.")
    for start in range(0, len(array), batch_size):
        yield _float_images(array[start:start + batch_size])


def _count(data):
    """Number of images in `data`, or None when a dataset does not know it (infinite
    or of unknown length). A finite batched dataset is counted by one pass over its
    batch sizes: a progress bar's total, at the cost of reading the data once."""
    if isinstance(data, tf.data.Dataset):
        n = data.cardinality().numpy()
        if n < 0:
            return None
        if _image_of(data.element_spec).shape.rank == 4:
            sizes = data.map(lambda *element: tf.shape(_image_of(
                element[0] if len(element) == 1 else element))[0])
            return int(sizes.reduce(0, lambda total, size: total + size))
        return int(n)
    return len(_image_of(data))


def fixed_batches(data, batch_size):
    """(index, inputs, n) for the batches of `data` (`batches`), every one padded to
    the size of the first, min(batch_size, N), so that one compiled trace serves all
    without computing rows that hold no image; n: the batch's real rows."""
    size = None
    for index, inputs in enumerate(batches(data, batch_size)):
        n = int(_image_of(inputs).shape[0])
        size = size or n
        yield index, _padded(inputs, size, n), n


def _padded(inputs, size, n):
    """`inputs` of n rows (every input) padded with zeros to `size` rows."""
    if n == size:
        return inputs

    def pad(tensor):
        return tf.concat([tensor, tf.zeros([size - n, *tensor.shape[1:]], tensor.dtype)],
                         axis=0)
    return tf.nest.map_structure(pad, inputs)


def _progbar(data, verbose, unit, running=(), done=0):
    """A progress bar over the images of `data` less `done` (finished before: the
    bar's time per image and time left are then those of this run's), or None;
    `running`: names of figures shown as given (running means the caller computes:
    Keras would average the values of the updates, and at the last one show that
    update's value alone)."""
    if not verbose:
        return None
    total = _count(data)
    return keras.utils.Progbar(None if total is None else total - done, verbose=verbose,
                               unit_name=unit, stateful_metrics=list(running))


def _is_vae(model):
    return hasattr(model, "encoder") and hasattr(model, "decoder") and hasattr(
        model, "prior_distribution")


# -- importance-sampled log p(x) -------------------------------------------------


@functools.lru_cache(maxsize=8)  # repeated calls reuse the compiled function
def _vae_log_px_fn(model, num_samples, chunk_size, jit_compile):
    """Compiled (images [B, ...], seed [2]) -> log p(x) estimates [B] for a VAE.

    The encoder's bottom-up pass runs once; each chunk samples the latent layers,
    runs the decoder and adds to the running log-sum-exp (`chunked_log_mean_exp`).
    """
    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def log_px(inputs, seed):
        images, context = model.split_inputs(inputs)
        features = model.encoder.features(images, training=False, context=context)

        def chunk(size, chunk_seed):
            return model.log_weight_terms(images, size, training=False, seed=chunk_seed,
                                          features=features,
                                          context=context)["log_weights"]

        return objectives.chunked_log_mean_exp(chunk, num_samples, chunk_size, seed)

    return log_px


def _callable_log_px_fn(log_prob, num_samples, chunk_size):
    """(inputs, seed) -> log p(x) [B] from chunks of a `log_prob(inputs, k)` callable.

    A chunk's estimate L_c over s_c samples contributes log sum w = L_c + log s_c.
    """
    def log_px(images, seed):
        del seed  # the callable draws its own samples

        def chunk(size, _):
            return (tf.cast(log_prob(images, size), tf.float32) + math.log(size))[None]

        return objectives.chunked_log_mean_exp(chunk, num_samples, chunk_size)

    return log_px


def default_chunk_size(model, inputs, batch_size, num_samples, memory=None):
    """Samples per chunk for a VAE: as many as make batch_size * chunk decoder rows
    fit in a quarter of `memory` (bytes; default this machine's), taking each row as
    `LIVE_TENSORS` copies of the largest tensor one sample of one image makes in the
    model's log-weights, and at most `MAX_ROWS` rows (larger chunks are no faster).

    Measured: the PixelCNN-head model of `configs/mnist_deep_pixelcnn6.cfg`, whose
    largest tensor is 1.2 MB per row (the head's 28x28x384 conditioning), held 15 GB
    at 10,000 rows, 1.25x that tensor per row; a 784-500-500-50 MLP (3 kB) gets
    MAX_ROWS, that model 2,600 rows in 24 GB.
    """
    memory = memory or physical_memory()
    row_bytes = LIVE_TENSORS * largest_tensor_bytes(model, inputs)
    rows = min(MAX_ROWS, memory // 4 // row_bytes)
    return int(max(1, min(num_samples, rows // batch_size)))


def _default_chunk_of(model, data, batch_size, num_samples):
    """`default_chunk_size` for the batches of `data` (traced on its first image)."""
    _, first, size = next(fixed_batches(data, batch_size), (0, None, 0))
    if first is None:
        raise ValueError("No images to evaluate.")
    return default_chunk_size(model, first, size, num_samples)


def largest_tensor_bytes(model, inputs):
    """Bytes of the largest tensor of one importance sample of one image of `inputs`
    in the model's log-weights, read off the traced graph (nothing is run): of the
    tensors computed from the image and the seed, not the weights or what comes of
    them alone (a VampPrior's pseudo-inputs)."""
    one = tf.nest.map_structure(lambda tensor: tensor[:1], inputs)
    graph = _vae_log_px_fn(model, 1, 1, False).get_concrete_function(
        one, tf.constant([0, 0], tf.int32)).graph
    reached = {t.ref() for t in graph.inputs if t.dtype != tf.resource}
    largest = 1
    for op in graph.get_operations():  # in the order they were made: inputs first
        if any(t.ref() in reached for t in op.inputs):
            for output in op.outputs:
                reached.add(output.ref())
                if output.shape.is_fully_defined() and output.dtype.is_floating:
                    largest = max(largest, output.shape.num_elements() * output.dtype.size)
    return largest


def physical_memory(limits=MEMORY_LIMIT_FILES):
    """Bytes of memory this process may use: the machine's, or its container's limit
    (cgroup v2 `memory.max`, v1 `memory.limit_in_bytes`) where lower; 8 GiB where
    the system does not say."""
    try:
        memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        memory = 8 << 30
    for path in limits:
        try:
            with open(path) as f:
                memory = min(memory, int(f.read().strip()))
        except (OSError, ValueError):  # absent, or "max": no limit
            pass
    return memory


def importance_sampled_log_px(model, data, num_samples=5000, batch_size=100,
                              chunk_size=None, seed=0, jit_compile=True, verbose=1,
                              kept=None):
    """Per-image importance-sampled estimates of log p(x) (nats).

    Args:
        model: a `VAE`, or a callable `(images [B, H, W, C], num_samples: int) -> [B]`
            returning the k-sample estimate for each image (e.g. an exported model's
            `log_prob` signature).
        data: images [N, H, W, C] in [0, 1] or a `tf.data.Dataset` (see `batches`).
        num_samples: k, the number of importance samples per image.
        batch_size: images per compiled call; the last batch is padded.
        chunk_size: samples decoded at once per image; by default about
            what fits in memory for a VAE (`default_chunk_size`: memory grows
            with batch_size * chunk_size) and all k in one call for a callable (an
            exported `log_prob` bounds its own memory).
        seed: integer seed of the stateless sampler (VAE path; reproducible).
        jit_compile: compile the VAE path with XLA.
        verbose: 1 shows a progress bar.
        kept: a `resumable.BatchResults` whose batches are taken as done and which
            keeps the new ones (a long evaluation resumes after a kill); None: none.

    Returns:
        An `Estimate`: `.values` [N] per image, `.mean`, `.stderr`, `.seconds` (of
        all the batches' computation, earlier calls' kept batches included).
        The test NLL is -mean.
    """
    num_samples, batch_size = int(num_samples), int(batch_size)
    if num_samples < 1 or batch_size < 1:
        raise ValueError(f"num_samples and batch_size must be >= 1, got {num_samples} "
                         f"and {batch_size}.")
    if _is_vae(model):
        chunk_size = min(int(chunk_size or _default_chunk_of(model, data, batch_size,
                                                             num_samples)), num_samples)
        log_px = _vae_log_px_fn(model, num_samples, chunk_size, jit_compile)
    elif callable(model):
        chunk_size = min(int(chunk_size or num_samples), num_samples)
        log_px = _callable_log_px_fn(model, num_samples, chunk_size)
    else:
        raise TypeError(f"Expected a VAE or a callable, got {type(model).__name__}.")
    kept = kept or resumable.BatchResults(None, None)
    if kept.done and verbose:
        print(f"Resuming from {kept.path}: {len(kept.done)} batches of {batch_size} "
              f"images done. So far: {so_far(kept)}", flush=True)
    bar = _progbar(data, verbose, "image", running=["log_px"],
                   done=sum(len(values) for values in kept.done.values()))
    values, total, count = [], 0.0, 0
    for index, padded, n in fixed_batches(data, batch_size):
        computed = index not in kept.done
        if computed:
            start = time.perf_counter()
            result = log_px(padded, tf.constant([seed, index], tf.int32)).numpy()[:n]
            kept.add(index, result, time.perf_counter() - start)
        values.append(kept.done[index])
        total, count = total + float(np.sum(values[-1])), count + len(values[-1])
        if bar and computed:  # the mean of all finished: a random subset when shuffled
            bar.add(len(values[-1]), [("log_px", total / count)])
    if not values:
        raise ValueError("No images to evaluate.")
    return Estimate(np.concatenate(values).astype(np.float64), kept.seconds)


def so_far(kept):
    """The log p(x) estimate of the batches a `resumable.BatchResults` holds, as a line:
    of a random subset when the images were in a random order (`tools.evaluate`)."""
    estimate = Estimate(np.concatenate(list(kept.done.values())).astype(np.float64))
    return f"log p(x) {estimate} finished"


# -- ELBO --------------------------------------------------------------------------


ELBO_TERMS = ("elbo", "rate", "distortion")


@functools.lru_cache(maxsize=8)  # repeated calls (a curve's points) trace once
def _vae_elbo_fn(model, jit_compile):
    """Compiled (inputs, seed [2]) -> the VAE's ELBO terms, one z per image."""
    @tf.function(jit_compile=jit_compile, reduce_retracing=True)
    def terms_fn(inputs, seed):
        return model.elbo(inputs, num_samples=1, seed=seed)

    return terms_fn


def evaluate_elbo(model, data, batch_size=500, seed=0, jit_compile=True, verbose=0):
    """Per-image ELBO, rate and distortion (nats), with one sample of z per image.

    Args:
        model: a `VAE` (rate is its KL: closed form where one exists), or a callable
            `images -> {"elbo", "rate", "distortion", ...}` (e.g. an exported `elbo`).
        data, batch_size, verbose: as for `importance_sampled_log_px`.
        seed: seed of the stateless sampler (VAE path).

    Returns:
        {"elbo": Estimate, "rate": Estimate, "distortion": Estimate}, and the rate of
        each layer of a hierarchy ("rate/1" is the layer next to x).
    """
    batch_size = int(batch_size)
    if _is_vae(model):
        names = model.metric_names
        terms_fn = _vae_elbo_fn(model, jit_compile)
    elif callable(model):
        names = None  # whatever the callable returns

        def terms_fn(images, seed_tensor):
            del seed_tensor
            return model(images)
    else:
        raise TypeError(f"Expected a VAE or a callable, got {type(model).__name__}.")
    bar = _progbar(data, verbose, "image")
    values = {name: [] for name in names or ELBO_TERMS}
    start = time.perf_counter()
    for index, padded, n in fixed_batches(data, batch_size):
        terms = terms_fn(padded, tf.constant([seed, index], tf.int32))
        for name in terms:
            values.setdefault(name, []).append(np.asarray(terms[name])[:n])
        if bar:
            bar.add(n)
    if not values["elbo"]:
        raise ValueError("No images to evaluate.")
    seconds = time.perf_counter() - start
    return {name: Estimate(np.concatenate(v).astype(np.float64), seconds)
            for name, v in values.items()}


# -- latent statistics -------------------------------------------------------------


def latent_statistics(model, data, batch_size=500, threshold=ACTIVE_UNIT_THRESHOLD):
    """Active units and the rate per latent dimension, averaged over `data`.

    For a hierarchy the dimensions of all layers are listed top first (split them
    with `VAE.latent_dims`); a lower layer's KL is taken at the posterior codes of
    the layers above.

    Args:
        model: a `VAE`, or a callable `images -> posterior codes [B, D]` (then the
            KL per dimension is not computed).
        data, batch_size: as for `importance_sampled_log_px`.
        threshold: A_u = Var_x(E_q[z_u]) above it counts as active (0.01, Burda et al.).

    Returns:
        {"active_units": int, "activity": [D] A_u, "threshold": float,
         "kl_per_dim": [D] mean over the data of KL(q(z_u|x) || p(z_u)) (nats), or
         None when the prior does not factorize (mixture, VampPrior) or the model is
         a callable}.
    """
    if _is_vae(model):
        @tf.function(reduce_retracing=True)
        def stats(images):
            codes, layers, _ = model.posterior_codes(images, training=False)
            per_dim = [objectives.kl_per_dimension(layer["posterior"], layer["prior"])
                       for layer in layers]
            if any(d is None for d in per_dim):
                return codes, tf.zeros([0])
            return codes, tf.concat(per_dim, axis=-1)
    elif callable(model):
        def stats(images):
            return model(images), tf.zeros([0])
    else:
        raise TypeError(f"Expected a VAE or a callable, got {type(model).__name__}.")
    means, kls = [], []
    for images in batches(data, int(batch_size)):
        mean, per_dim = stats(images)
        means.append(np.asarray(mean, np.float64))
        kls.append(np.asarray(per_dim, np.float64))
    if not means:
        raise ValueError("No images to evaluate.")
    means = np.concatenate(means)
    activity = np.var(means, axis=0)
    kl_per_dim = (np.concatenate(kls).mean(axis=0)
                  if kls[0].size else None)
    return {"active_units": int(np.sum(activity > threshold)), "activity": activity,
            "threshold": float(threshold), "kl_per_dim": kl_per_dim}


# -- everything at once ------------------------------------------------------------


def signature_inputs(inputs):
    """A signature call's keyword arguments: images=, and labels= (int32) or context=
    of a conditional model's inputs."""
    if not isinstance(inputs, dict):
        return {"images": inputs}
    kwargs = {"images": inputs["images"]}
    if "labels" in inputs:
        kwargs["labels"] = tf.cast(inputs["labels"], tf.int32)
    if "context" in inputs:
        kwargs["context"] = tf.cast(inputs["context"], tf.float32)
    return kwargs


def saved_model_functions(loaded):
    """Callables for this module from a `tf.saved_model.load`-ed tfvae export.

    Uses the `log_prob`, `elbo`, `encode` and `sample` (the likelihood's means of
    `sample(num_samples, labels=None)`, an autoregressive head's draws) signatures
    (see DESIGN.md), the image shape from `sample`'s output, the likelihood family
    from the `decode` signature's outputs ("mixture_logits": discretized logistic,
    else "loc"/"scale": Gaussian) and, as "context_key", the conditioning input
    ("labels", "context" or None). The callables take images or a conditional
    model's inputs {"images", "labels"}.
    """
    signatures = loaded.signatures
    missing = {"log_prob", "elbo", "encode", "sample"} - set(signatures)
    if missing:
        raise ValueError(f"The SavedModel lacks the signatures {sorted(missing)}.")

    def log_prob(inputs, num_samples):
        return signatures["log_prob"](**signature_inputs(inputs), num_samples=tf.constant(
            num_samples, tf.int32))["log_prob"]

    def elbo(inputs):
        return signatures["elbo"](**signature_inputs(inputs))

    def posterior_mean(inputs):
        outputs = signatures["encode"](**signature_inputs(inputs))
        return outputs["code"] if "code" in outputs else outputs["loc"]

    likelihood = "bernoulli"
    decoded = signatures["decode"].structured_outputs if "decode" in signatures else {}
    if "mixture_logits" in decoded:
        likelihood = "discretized_logistic"
    elif "loc" in decoded:
        likelihood = "gaussian"
    # A Bernoulli export with draws has an autoregressive head: its images are the
    # greedy path's conditionals, its draws the model's own (binary) images.
    drawn = likelihood == "bernoulli" and "draws" in signatures["sample"].structured_outputs

    def sample(num_samples, labels=None):
        conditioning = {} if labels is None else {"labels": tf.constant(labels, tf.int32)}
        return signatures["sample"](num_samples=tf.constant(num_samples, tf.int32),
                                    **conditioning)["draws" if drawn else "images"]
    # The sampled images have the model's image shape (so do the declared inputs).
    image_shape = tuple(signatures["sample"].structured_outputs["images"].shape[1:])
    inputs = signatures["elbo"].structured_input_signature[1]
    context_key = next((key for key in ("labels", "context") if key in inputs), None)
    return {"log_prob": log_prob, "elbo": elbo, "posterior_mean": posterior_mean,
            "sample": sample, "likelihood": likelihood, "image_shape": image_shape,
            "context_key": context_key}


def evaluate(model, data, num_samples=5000, batch_size=100, chunk_size=None, seed=0,
             jit_compile=True, num_levels=256, verbose=1, kept=None):
    """The test report: NLL (k samples), ELBO, rate, distortion, active units.

    Args:
        model: a `VAE` or the dict of `saved_model_functions`.
        data: images in [0, 1] (see `batches`).
        num_samples: k for the NLL; 0 skips it.
        num_levels: for Gaussian likelihoods, bits/dim assume 8-bit data dequantized
            as (x + u) / num_levels (see the module docstring).
        Others as for `importance_sampled_log_px`.

    Returns:
        A JSON-serializable dict; nats per image unless named `*_bits_per_dim`, and
        "likelihood" and "figures", what its log p(x) is (`distributions.FIGURES`:
        a log-probability, or for the Gaussian a log-density). For a discretized
        likelihood and a Gaussian one, `elbo_bits_per_dim` and `nll_bits_per_dim`.
    """
    if _is_vae(model):
        log_prob_fn = elbo_fn = latent_fn = model
        likelihood, image_shape = model.decoder.likelihood, model.image_shape
    else:
        log_prob_fn, elbo_fn = model["log_prob"], model["elbo"]
        latent_fn = model["posterior_mean"]
        likelihood, image_shape = model["likelihood"], model["image_shape"]
    report = {"likelihood": likelihood,
              "figures": distributions.FIGURES.get(likelihood, "nats per image")}
    terms = evaluate_elbo(elbo_fn, data, batch_size=max(batch_size, 100), seed=seed,
                          jit_compile=jit_compile)
    terms.pop("bits_per_dim", None)  # a discretized model's; elbo_bits_per_dim below
    for name, estimate in terms.items():
        report[name], report[f"{name}_stderr"] = estimate.mean, estimate.stderr
    report["num_images"] = int(len(terms["elbo"].values))
    report["elbo_seconds"] = terms["elbo"].seconds
    if num_samples:
        log_px = importance_sampled_log_px(log_prob_fn, data, num_samples, batch_size,
                                           chunk_size, seed, jit_compile, verbose, kept)
        report.update(nll=-log_px.mean, nll_stderr=log_px.stderr, k=int(num_samples),
                      nll_seconds=log_px.seconds)
    dims = int(np.prod(image_shape))
    if distributions.is_discretized(likelihood):
        for name, log_px in (("elbo", report["elbo"]),
                             ("nll", -report["nll"] if num_samples else None)):
            if log_px is not None:
                report[f"{name}_bits_per_dim"] = float(objectives.bits_per_dim(log_px,
                                                                               dims))
                report[f"{name}_bits_per_dim_stderr"] = float(
                    report[f"{name}_stderr"] / (dims * math.log(2.0)))
    elif likelihood == "gaussian":
        report["elbo_bits_per_dim"] = float(bits_per_dim(report["elbo"], dims, num_levels))
        if num_samples:
            report["nll_bits_per_dim"] = float(bits_per_dim(-report["nll"], dims,
                                                            num_levels))
    latents = latent_statistics(latent_fn, data, batch_size=max(batch_size, 100))
    report["active_units"] = latents["active_units"]
    report["activity"] = latents["activity"].tolist()
    if latents["kl_per_dim"] is not None:
        report["kl_per_dim"] = latents["kl_per_dim"].tolist()
    return report
