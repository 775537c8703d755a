"""Plain functions that turn option values into a model, an optimizer and a strategy.

`tfvae.train` calls them with its flag values; in a notebook they are called with
keyword arguments, e.g.

    model = build_model((28, 28, 1), latent_dim=50)
    model.compile(optimizer=build_optimizer("adam", 1e-3), jit_compile=True)
    model.fit(tfvae.data.load_dataset("binarized_mnist", "train", 100), epochs=10)
"""

import inspect
import os

import keras
import tensorflow as tf

from tfvae import blocks, discretized, losses
from tfvae.checks import InputError, check_count, choice, first_line
from tfvae.heads import POSTERIORS, posterior_head
from tfvae.hierarchy import TopDownBlock
from tfvae.model import OPTIONS, VAE
from tfvae.networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder
from tfvae.priors import ConditionalPrior, MixturePrior, StandardNormalPrior, VampPrior

NETWORKS = ("mlp", "conv", "resnet")
PRIORS = ("standard_normal", "mixture", "vampprior", "conditional")
# What the data decides (the labels' classes, the context's size), not an option.
CONTEXT_ARGUMENTS = ("num_classes", "context_dim")
OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamax": keras.optimizers.Adamax,
    "adagrad": keras.optimizers.Adagrad,
    "sgd": keras.optimizers.SGD,
    "rmsprop": keras.optimizers.RMSprop,
}
LR_SCHEDULES = ("constant", "cosine", "exponential")
# Steps over which the EMA decay warms up: min(momentum, (1 + t) / (EMA_WARMUP + t)).
EMA_WARMUP = 10
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")


# The largest sizes built, far above any published setting: larger ones do not fail
# cleanly but exhaust memory or crash while building (--flow_steps=100000 segfaulted).
# A width of 8192 is a 67M-weight Dense layer (1 GB with Adam's moments and gradient).
SIZE_LIMITS = {"latent_dim": 8192, "width": 8192, "layers": 64, "flow_steps": 64,
               "prior_components": 10_000, "channels": 1024}
# Spatial hierarchies: channels of the cells and of each latent group (1024 channels
# of 3x3 convolutions at 28x28 are ~15 GFLOP per image and cell), cells at full size.
CHANNELS = ("cell_channels", "latent_channels", "autoregressive_channels")
WIDTHS = ("encoder_hidden_units", "decoder_hidden_units", "encoder_filters",
          "decoder_filters", "top_down_latent_dims", "top_down_hidden_units")


def check_sizes(latent_dim=50, flow_steps=2, flow_hidden_units=256, prior_components=0,
                **options):
    """InputError naming the option and its bound (`SIZE_LIMITS`) when a size is out
    of it; called before anything is built, by `build_model` and the trainer."""
    check_count(latent_dim, "latent_dim", SIZE_LIMITS["latent_dim"])
    check_count(flow_steps, "flow_steps", SIZE_LIMITS["flow_steps"])
    check_count(flow_hidden_units, "flow_hidden_units", SIZE_LIMITS["width"])
    if prior_components:  # 0: the prior's default
        check_count(prior_components, "prior_components", SIZE_LIMITS["prior_components"])
    for name in CHANNELS:
        check_count(options.get(name, 1), name, SIZE_LIMITS["channels"])
    for name, limit in (("cell_bottleneck", SIZE_LIMITS["channels"]),
                        ("output_cells", SIZE_LIMITS["layers"]),
                        ("autoregressive_layers", SIZE_LIMITS["layers"])):  # 0 allowed
        value = options.get(name, 0)
        if value != 0:
            check_count(value, name, limit)
    for name in WIDTHS:
        units = _ints(name, options.get(name, ()))
        if len(units) > SIZE_LIMITS["layers"]:
            raise InputError(f"{name} lists {len(units)} layers; at most "
                             f"{SIZE_LIMITS['layers']}.")
        for value in units:
            check_count(value, f"each of {name}", SIZE_LIMITS["width"])


def _ints(name, values):
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a list of integers, got {values!r}.") from None


def build_model(image_shape, *, encoder="mlp", decoder="mlp",
                encoder_hidden_units=(500, 500), decoder_hidden_units=(500, 500),
                encoder_filters=(32, 64), decoder_filters=(64, 32), activation="relu",
                dropout=0.0, latent_dim=50, top_down_latent_dims=(),
                top_down_hidden_units=(300, 300), posterior="gaussian", flow_steps=2,
                flow_hidden_units=256, likelihood="bernoulli",
                likelihood_components=discretized.DEFAULT_COMPONENTS,
                prior="standard_normal", prior_components=0, latent_groups="",
                latent_channels=16, cell_channels=64, cell_bottleneck=0, output_cells=1,
                autoregressive_layers=0, autoregressive_channels=32, num_classes=0,
                context_dim=0, **objective):
    """A built `VAE` for images of `image_shape` (H, W, C).

    encoder, decoder: "mlp" or "conv". *_hidden_units: Dense layer sizes; *_filters:
    conv channels (conv only; the conv decoder needs H and W divisible by
    2**len(decoder_filters)). dropout: rate after each hidden layer of MLP networks.
    latent_dim: size of z (of the top layer z_L in a hierarchy).
    top_down_latent_dims: sizes of the layers below the top, top first, e.g. (40,)
    for a two-level hierarchy p(z_2) p(z_1|z_2) p(x|z_1, h_1); () for one layer.
    top_down_hidden_units: Dense layers of each top-down block (see `hierarchy.py`).
    posterior: "gaussian" or "iaf" (`flow_steps` MADE steps of `flow_hidden_units`
    units; see `heads.py`), for every layer's posterior.
    likelihood: "bernoulli", "gaussian" or "discretized_logistic" (8-bit levels, a
    mixture of likelihood_components logistics per pixel; `discretized.py`).
    prior: "standard_normal", "mixture" (prior_components
    Gaussians, default 10) or "vampprior" (prior_components pseudo-inputs, default
    500), the prior of the top layer; "conditional" (p(z|c), `ConditionalPrior`) needs
    a context. encoder = decoder = "resnet": spatial latents (see `blocks.py`), the
    groups given by latent_groups ("7x2,14x2": top first, resolution x residual
    cells), each of latent_channels maps, residual cells of cell_channels channels
    (cell_bottleneck inside, 0: half), output_cells cells at full resolution; it
    takes no latent_dim, top_down_* or *_hidden_units options.
    autoregressive_layers > 0 (resnet, Bernoulli, one channel): a PixelCNN of that
    many masked convolutions of autoregressive_channels channels adds to the
    decoder's logits (`pixelcnn.py`); 0: the factorized likelihood.
    num_classes: a conditional VAE of class labels 0..num_classes-1;
    context_dim: of float vectors of that size (0: unconditional). `objective`: `VAE`'s
    options (`model.OPTIONS`: num_samples, kl) and the objective's as flat options
    (`losses.FLAT_OPTIONS`: objective, gradient_estimator, beta, ...; the trainer's
    flags), which `losses.from_flat_options` turns into the VAE's loss.
    """
    unknown = sorted(set(objective) - set(OPTIONS) - set(losses.FLAT_OPTIONS))
    if unknown:
        raise ValueError(f"Unknown model option(s) {', '.join(unknown)}; the options are "
                         f"{', '.join(MODEL_DEFAULTS)}.")
    image_shape = _ints("image_shape", image_shape)
    check_sizes(latent_dim, flow_steps, flow_hidden_units, prior_components,
                **{name: value for name, value in locals().items()
                   if name in (*WIDTHS, *CHANNELS, "cell_bottleneck", "output_cells",
                               "autoregressive_layers")})
    context = dict(num_classes=int(num_classes), context_dim=int(context_dim))
    width = context["num_classes"] or context["context_dim"]
    posterior = choice("posterior", posterior, POSTERIORS)

    def head(dim, name="head"):  # every layer's posterior head
        return posterior_head(dim, posterior, flow_steps=flow_steps,
                              flow_hidden_units=flow_hidden_units, name=name)

    enc_units = _ints("encoder_hidden_units", encoder_hidden_units)
    dec_units = _ints("decoder_hidden_units", decoder_hidden_units)
    if float(dropout) and (encoder, decoder) != ("mlp", "mlp"):
        raise ValueError("dropout applies to MLP encoders and decoders only.")
    if "resnet" in (choice("encoder", encoder, NETWORKS), choice("decoder", decoder,
                                                                  NETWORKS)):
        if (encoder, decoder) != ("resnet", "resnet"):
            raise ValueError("encoder='resnet' and decoder='resnet' go together "
                             "(spatial latents need both).")
        if top_down_latent_dims:
            raise ValueError("A resnet hierarchy's groups are latent_groups; leave "
                             "top_down_latent_dims empty.")
        enc, dec, top_down = spatial_hierarchy(
            image_shape, latent_groups, latent_channels, cell_channels, cell_bottleneck,
            output_cells, likelihood, posterior, width, activation=activation,
            autoregressive_layers=autoregressive_layers,
            autoregressive_channels=autoregressive_channels,
            likelihood_components=likelihood_components)
        latent_dim = enc.latent_dim
    elif autoregressive_layers:
        raise ValueError("autoregressive_layers needs the spatial decoder "
                         "(encoder='resnet', decoder='resnet').")
    elif choice("encoder", encoder, NETWORKS) == "mlp":
        enc = MLPEncoder(latent_dim, enc_units, activation, dropout=dropout,
                         context_dim=width, name="encoder", head=head(latent_dim))
    else:
        enc = ConvEncoder(latent_dim, _ints("encoder_filters", encoder_filters), enc_units,
                          activation, context_dim=width, name="encoder",
                          head=head(latent_dim))
    if decoder == "resnet":
        pass
    elif decoder == "mlp":
        dec = MLPDecoder(image_shape, dec_units, likelihood, activation, dropout=dropout,
                         likelihood_components=likelihood_components, name="decoder")
    else:
        dec = ConvDecoder(image_shape, _ints("decoder_filters", decoder_filters), dec_units,
                          likelihood, activation,
                          likelihood_components=likelihood_components, name="decoder")
    prior = choice("prior", prior, PRIORS)
    components = int(prior_components)
    if prior == "standard_normal":
        prior_layer = StandardNormalPrior(latent_dim, name="prior")
    elif prior == "mixture":
        prior_layer = MixturePrior(latent_dim, components or 10, name="prior")
    elif prior == "vampprior":
        prior_layer = VampPrior(image_shape, components or 500, name="prior")
    elif not width:
        raise ValueError("prior='conditional' is p(z|c): it needs a conditional model "
                         "(labels; --conditional in the trainer).")
    else:
        prior_layer = ConditionalPrior(latent_dim, width, name="prior")
    if encoder != "resnet":
        top_down = [TopDownBlock(dim, _ints("top_down_hidden_units", top_down_hidden_units),
                                 activation, name=f"top_down_{i}",
                                 posterior_head=head(dim, "posterior_head"))
                    for i, dim in enumerate(_ints("top_down_latent_dims",
                                                  top_down_latent_dims))]
    loss = losses.from_flat_options(**{name: objective.pop(name) for name in
                                       losses.FLAT_OPTIONS if name in objective})
    return VAE(enc, dec, prior_layer, top_down=top_down, name="vae", loss=loss,
               **context, **objective)


def spatial_hierarchy(image_shape, latent_groups, latent_channels=16, channels=64,
                      bottleneck=0, output_cells=1, likelihood="bernoulli",
                      posterior="gaussian", context_dim=0, kernel_size=3,
                      activation="relu", autoregressive_layers=0,
                      autoregressive_channels=32,
                      likelihood_components=discretized.DEFAULT_COMPONENTS):
    """(encoder, decoder, top-down blocks) of a spatial hierarchy (`blocks.py`); the
    decoder with a PixelCNN head of `autoregressive_layers` (`pixelcnn.py`)."""
    if not latent_groups:
        raise ValueError("encoder='resnet' needs latent_groups, e.g. '7x2,14x2' (top "
                         "first: resolution x residual cells).")
    if posterior != "gaussian":
        raise ValueError("Spatial latent groups take the Gaussian posterior (an IAF "
                         "over a whole map is not built).")
    groups = blocks.parse_groups(latent_groups, image_shape)
    if len(groups) < 2:
        raise ValueError(f"latent_groups needs two groups or more, got {latent_groups!r}"
                         " (for one latent layer use encoder='conv').")
    num_cells = 2 * sum(g[2] for g in groups) + int(output_cells)
    shared = dict(channels=channels, latent_channels=latent_channels,
                  bottleneck=bottleneck, kernel_size=kernel_size, activation=activation,
                  num_cells=num_cells)
    encoder = blocks.ResNetEncoder(image_shape, groups, context_dim=context_dim,
                                   name="encoder", **shared)
    top_down = [blocks.SpatialBlock(group, above[:2], context_dim=context_dim,
                                    name=f"top_down_{i}", **shared)
                for i, (above, group) in enumerate(zip(groups, groups[1:]))]
    decoder = blocks.ResNetDecoder(image_shape, groups[-1], output_cells, likelihood,
                                   autoregressive_layers=autoregressive_layers,
                                   autoregressive_channels=autoregressive_channels,
                                   likelihood_components=likelihood_components,
                                   name="decoder", **shared)
    return encoder, decoder, top_down


def keyword_defaults(function):
    """{name: default} of `function`'s arguments that have one."""
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not p.empty}


# Every option of `build_model` with its default: the networks' and prior's, then VAE's
# and its objective's (the context's size comes from the data).
MODEL_DEFAULTS = {name: default for name, default in {
    **keyword_defaults(build_model),
    **{name: keyword_defaults(VAE)[name] for name in OPTIONS},
    **losses.FLAT_DEFAULTS}.items()
    if name not in CONTEXT_ARGUMENTS}


def build_learning_rate(learning_rate, schedule="constant", *, total_steps=None,
                        steps_per_epoch=None, decay_rate=0.5, decay_epochs=1.0):
    """A float or a `keras.optimizers.schedules` object, stepped per batch.

    constant: `learning_rate`. cosine: half a cosine from `learning_rate` to 0 over
    `total_steps`. exponential: learning_rate * decay_rate ** (step / (decay_epochs *
    steps_per_epoch)), a smooth decay by `decay_rate` every `decay_epochs` epochs.
    """
    learning_rate = float(learning_rate)
    if learning_rate <= 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}.")
    schedule = choice("lr_schedule", schedule, LR_SCHEDULES)
    if schedule == "constant":
        return learning_rate
    if schedule == "cosine":
        if not total_steps:
            raise ValueError("lr_schedule='cosine' needs the number of training steps.")
        return keras.optimizers.schedules.CosineDecay(learning_rate, int(total_steps))
    if not steps_per_epoch or float(decay_epochs) <= 0:
        raise ValueError("lr_schedule='exponential' needs steps per epoch and "
                         "lr_decay_epochs > 0.")
    return keras.optimizers.schedules.ExponentialDecay(
        learning_rate, max(1, round(float(decay_epochs) * steps_per_epoch)),
        float(decay_rate))


class EMAWarmup:
    """Mixin for a Keras optimizer: the weight average warms up, as in
    `tf.train.ExponentialMovingAverage(num_updates=step)`.

    Keras averages with a fixed decay m from the first step, so after t steps a
    fraction m ** t of the initial weights remains in the average: 61% after 500
    steps at m = 0.999 (one epoch of configs/mnist.cfg tested at -370 nats). Here the
    decay at step t is min(m, (1 + t) / (10 + t)): 0 at step 0 (the average starts as
    the weights, as in Keras), 0.5 at t = 8, and m = 0.999 from t = 8990 on.
    """

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        step = keras.ops.cast(self.iterations, "float32")
        warm = keras.ops.minimum(self.ema_momentum, (1.0 + step) / (EMA_WARMUP + step))
        # Step 0 copies the weights, as Keras does.
        decay = warm * keras.ops.cast(keras.ops.not_equal(self.iterations, 0), "float32")
        for var, average in zip(trainable_variables, self._model_variables_moving_average):
            if average is not None:
                momentum = keras.ops.cast(decay, var.dtype)
                average.assign(momentum * average + (1 - momentum) * var)


def _norm(grads):
    """The global norm of a list of gradients (None entries left out)."""
    return tf.linalg.global_norm([g for g in grads if g is not None])


class SkipOutliers:
    """Mixin for a Keras optimizer: an update whose gradient norm (over all weights,
    before any clipping) exceeds `skip_threshold`, or is not finite, is skipped
    whole: no weight, moment, average or step counter moves (Efficient-VDVAE's
    gradient skipping, so that a rare huge gradient cannot wreck a long run).
    `skipped_updates` counts them. 0 turns it off.
    """

    def __init__(self, *args, skip_threshold=0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.skip_threshold = float(skip_threshold)
        if self.skip_threshold < 0:
            raise ValueError(f"skip_threshold must be >= 0, got {skip_threshold!r}.")
        if self.skip_threshold:  # only then: older checkpoints keep their variables
            self.skipped_updates = self.add_variable(
                (), initializer="zeros", dtype="int64", name="skipped_updates")

    def apply(self, grads, trainable_variables=None):
        if not self.skip_threshold:
            return super().apply(grads, trainable_variables)
        if not self.built and trainable_variables is not None:
            self.build(list(trainable_variables))
        if tf.__internal__.distribute.strategy_supports_no_merge_call():
            return self._apply_unless_outlier(
                _norm(grads), lambda: super(SkipOutliers, self).apply(
                    grads, trainable_variables))
        # A strategy aggregates gradients in a merge_call, which no cond may hold in
        # a replica context (as Keras's LossScaleOptimizer): decide across replicas.
        # The norm is the sum of the replicas' norms, a bound on their sum's norm.
        def across(strategy, grads, trainable_variables):
            norms = strategy.extended.call_for_each_replica(_norm, args=(grads,))
            norm = strategy.reduce(tf.distribute.ReduceOp.SUM, norms, axis=None)
            self._apply_unless_outlier(norm, lambda: strategy.extended.call_for_each_replica(
                super(SkipOutliers, self).apply, args=(grads, trainable_variables)))

        tf.distribute.get_replica_context().merge_call(
            across, args=(grads, trainable_variables))

    def _apply_unless_outlier(self, norm, apply):
        keep = tf.logical_and(tf.math.is_finite(norm), norm <= self.skip_threshold)

        def update():
            apply()
            return tf.constant(0, tf.int64)

        self.skipped_updates.assign_add(
            tf.cond(keep, update, lambda: tf.constant(1, tf.int64)))

    def get_config(self):
        return {**super().get_config(), "skip_threshold": self.skip_threshold}


def _with_ema_warmup(cls):
    """`cls` with `EMAWarmup` and `SkipOutliers`, registered so that `.keras` files
    and backups reload."""
    warmed = type(cls.__name__, (EMAWarmup, SkipOutliers, cls), {"__module__": __name__})
    return keras.saving.register_keras_serializable(package="tfvae")(warmed)


WARMUP_OPTIMIZERS = {name: _with_ema_warmup(cls) for name, cls in OPTIMIZERS.items()}


def build_optimizer(name="adam", learning_rate=1e-3, *, clipnorm=0.0,
                    global_clipnorm=0.0, skip_threshold=0.0, use_ema=False,
                    ema_momentum=0.99):
    """A Keras optimizer; `learning_rate` may be a schedule (`build_learning_rate`).

    clipnorm > 0 clips each gradient tensor's norm, global_clipnorm > 0 the norm of
    all of them together; skip_threshold > 0 skips updates whose gradient norm is
    larger (`SkipOutliers`); use_ema keeps an exponential moving average of the
    weights (pair with `keras.callbacks.SwapEMAWeights`), whose decay warms up to
    ema_momentum (`EMAWarmup`).
    """
    if clipnorm and global_clipnorm:
        raise ValueError("Give clipnorm (per tensor) or global_clipnorm, not both.")
    name = choice("optimizer", name, tuple(OPTIMIZERS))
    options = dict(learning_rate=learning_rate, clipnorm=float(clipnorm) or None,
                   global_clipnorm=float(global_clipnorm) or None,
                   use_ema=bool(use_ema), ema_momentum=float(ema_momentum))
    if use_ema or skip_threshold:
        return WARMUP_OPTIMIZERS[name](skip_threshold=skip_threshold, **options)
    return OPTIMIZERS[name](**options)


def build_strategy(name="default", tpu=None):
    """A `tf.distribute` strategy. Create it before any other TensorFlow work.

    default: one device. mirrored: all local GPUs (one replica on a CPU).
    multi_worker: `MultiWorkerMirroredStrategy`, cluster from the TF_CONFIG variable.
    tpu: `TPUStrategy` on the TPU at address `tpu` ("" or "local" for a TPU VM);
    untested here, as no TPU was available.
    """
    name = choice("strategy", name, STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("strategy='multi_worker' needs the TF_CONFIG environment "
                             "variable (cluster and task of this worker).")
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError) as error:
        where = f"at {tpu!r}" if tpu else "(no --tpu address given)"
        raise ValueError(f"strategy='tpu' found no TPU {where}: {first_line(error)}") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy):
    """True for the worker that writes checkpoints, logs and exports."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in (resolver.cluster_spec().as_dict() or {})
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief
