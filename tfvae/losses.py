"""Training objectives as objects: what `VAE(..., loss=...)` minimizes.

An objective turns the model's forward pass into per-example terms (`terms`, which the
model's `call` returns) and those terms into the scalar loss (`loss`, the model's
`compute_loss`). Every objective reports the ELBO's terms (`VAE.bound_terms`), so the
logs show `elbo`, `rate` and `distortion` whatever is trained, plus the terms it names
in `tracked_terms`. Per example, with D = -E_q[log p(x|z)], R = KL(q(z|x) || p(z)),
log w_i = log p(x, z_i) - log q(z_i|x) and E_B the mean over the minibatch (each
formula is a function of `objectives.py`, which gives the papers):

* ELBO:  loss = E_B[D] + w(t) R_B + (alpha + lambda - 1) MMD(q(z), p(z)),
         w(t) = beta (1 - alpha) min(1, t / T_warmup),
         R_B = E_B[R], or sum_d max(free_bits, E_B[R_d]) with free bits.
  The encoder's gradient: reparameterized z, or the score function (REINFORCE with a
  leave-one-out baseline).
* IWAE:  loss = -E_B[log 1/k sum_i w_i], k = the model's num_samples; reparameterized
  or DReG encoder gradient.
* WakeSleep:  loss = E_B[-log p(x, z)], z ~ q(z|x) held fixed (wake: decoder, prior)
              + mean over dreams of -log q(z_d|x_d), (z_d, x_d) ~ p(z) p(x|z) (sleep:
              encoder), as many dreams as codes.

A gradient estimator adds a zero-valued surrogate (`_surrogate`) whose gradient is the
estimator, so the loss shown stays the objective. Keys starting with "_" are the
objective's own: `predict` drops them.

A new objective is one class (a subclass of `Objective`, or of one below, registered
with Keras serialization so that `.keras` files reload) and one entry in `LOSSES` (for
its name). Older configurations name the objective with flat options (`objective=`,
`gradient_estimator=`, `beta=`, ...: tfvae 0.1 `.keras` files, config.json, the
trainer's flags); `from_flat_options` maps them to an object.
"""

import inspect

import keras
import tensorflow as tf

from tfvae import objectives
from tfvae.checks import choice


def arguments(cls):
    """{name: default} of the constructor arguments of an `Objective` class, with its
    parent's where it passes **kwargs on."""
    if cls is Objective or not issubclass(cls, Objective):
        return {}
    if "__init__" not in vars(cls):
        return arguments(cls.__mro__[1])
    params = inspect.signature(cls.__init__).parameters.values()
    named = {p.name: p.default for p in params if p.name != "self"
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return {**arguments(cls.__mro__[1]), **named}
    return named


class Objective:
    """What a `VAE` trains: `terms` in its forward pass, `loss` in `compute_loss`.

    Class attributes: `gradient_estimators`, the values the `gradient_estimator`
    argument takes (none: no such argument); `tracked_terms`, per-example terms the
    model logs besides the ELBO's; `bound`, the logged term the objective maximizes
    (the trainer's checkpoints and early stopping follow its validation value).
    A subclass stores each constructor argument as the attribute of the same name,
    which `get_config` reads.
    """

    gradient_estimators = ()
    tracked_terms = ()
    bound = "elbo"

    def check(self, model):
        """ValueError, in one line, when this objective cannot train `model`."""

    def terms(self, model, images, context=None, training=None, seed=None):
        """Per-example terms [B] of images [B, H, W, C] (and contexts [B, C] of a
        conditional model): `model.bound_terms`, `tracked_terms` and the objective's
        own ("_" keys). `seed`: a stateless seed [2] for the codes."""
        raise NotImplementedError

    def loss(self, model, terms):
        """The scalar loss of one replica's batch, from `terms`."""
        raise NotImplementedError

    def get_config(self):
        return {name: getattr(self, name) for name in arguments(type(self))}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def check_estimator(cls, estimator):
    """`estimator` if objectives of class `cls` take it; else one line naming the
    objective that does."""
    if estimator in cls.gradient_estimators:
        return estimator
    owners = [name for name, other in LOSSES.items()
              if estimator in other.gradient_estimators]
    if not owners:
        choice("gradient_estimator", estimator, GRADIENT_ESTIMATORS)  # unknown: raises
    takes = ", ".join(cls.gradient_estimators) or "no gradient_estimator"
    raise ValueError(f"gradient_estimator={estimator!r} needs objective={owners[0]!r}; "
                     f"{cls.__name__} takes {takes}.")


def fixed_codes(model, features, context=None, seed=None):
    """(codes held fixed, the same codes reparameterized): z_l ~ q of every layer, top
    first, [k, B, D_l], k = the model's num_samples."""
    codes = model.sampled_codes(features, model.num_samples, seed, context)
    return [tf.stop_gradient(z) for z in codes], codes


def minus_surrogate(loss, terms):
    """`loss` less the batch mean of a gradient estimator's surrogate, if there is one."""
    if "_surrogate" in terms:
        loss -= objectives.batch_mean(terms["_surrogate"])
    return loss


@keras.saving.register_keras_serializable(package="tfvae")
class ELBO(Objective):
    """The negative ELBO, with the knobs of its family (see the module docstring).

    Args:
        beta: weight of the rate (beta-VAE).
        kl_warmup_steps: optimizer steps of the linear ramp of the rate weight from 0
            to beta.
        free_bits: minimum rate per latent dimension (nats), or per channel map of a
            spatial group (`blocks.py`); 0 to disable.
        info_alpha, info_lambda: InfoVAE weights; the loss gains
            (alpha + lambda - 1) * MMD(q(z), p(z)) and the rate is scaled by
            1 - alpha. The defaults (0, 1) give the plain ELBO.
        mmd_kernel: "imq" or "rbf".
        gradient_estimator: "reparameterization" or "score_function" (REINFORCE with a
            leave-one-out baseline; one stochastic layer).
    """

    gradient_estimators = ("reparameterization", "score_function")

    def __init__(self, beta=1.0, kl_warmup_steps=0, free_bits=0.0, info_alpha=0.0,
                 info_lambda=1.0, mmd_kernel="imq", gradient_estimator="reparameterization"):
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.info_alpha = float(info_alpha)
        self.info_lambda = float(info_lambda)
        self.mmd_kernel = choice("mmd_kernel", mmd_kernel, objectives.MMD_KERNELS)
        self.gradient_estimator = check_estimator(type(self), gradient_estimator)
        if self.gradient_estimator == "score_function" and self.mmd_weight:
            raise ValueError("gradient_estimator='score_function' gives the encoder no "
                             "gradient of the InfoVAE MMD term; use 'reparameterization'.")
        if self.free_bits < 0 or self.beta < 0 or self.kl_warmup_steps < 0:
            raise ValueError("beta, kl_warmup_steps and free_bits must be >= 0.")

    @property
    def mmd_weight(self):
        return self.info_alpha + self.info_lambda - 1.0

    def check(self, model):
        if self.gradient_estimator == "score_function" and model.num_layers > 1:
            raise ValueError("gradient_estimator='score_function' supports one "
                             "stochastic layer; use 'reparameterization' for a hierarchy.")

    def rate_weight(self, model):
        """w(t) at the model's optimizer step t (0 before `compile`)."""
        optimizer = getattr(model, "optimizer", None)
        step = optimizer.iterations if optimizer is not None else 0
        return objectives.kl_weight(step, self.beta * (1.0 - self.info_alpha),
                                    self.kl_warmup_steps)

    def terms(self, model, images, context=None, training=None, seed=None):
        features = model.encoder.features(images, training=training, context=context)
        if self.gradient_estimator == "score_function":
            core, surrogate = self._score_function(model, images, features, context,
                                                   training, seed)
            terms = {"_surrogate": surrogate}
        else:
            core = model.log_weight_terms(images, model.num_samples, training=training,
                                          seed=seed, features=features, context=context)
            terms = {}
        terms.update(model.bound_terms(core))
        if self.free_bits:
            terms["_rate_per_dim"] = self._free_bits_units(model, core)
        if self.mmd_weight:
            terms["_mmd"] = self._mmd(model, images, core, context)
        return terms

    def _score_function(self, model, images, features, context, training, seed):
        """(core at codes with no gradient, the surrogate of the score function). A
        sampled rate at fixed z has no path gradient: its score term goes in f."""
        fixed, _ = fixed_codes(model, features, context, seed)
        core = model.log_weight_terms(images, model.num_samples, training=training,
                                      codes=fixed, features=features, context=context)
        signal = core["log_px_z"]
        if core["rate_per_dim"] is None or model.kl == "sampled":
            signal = signal - self.rate_weight(model) * (core["log_q"] - core["log_p"])
        return core, objectives.score_function_surrogate(signal, core["log_q"])

    @staticmethod
    def _free_bits_units(model, core):
        if core["rate_per_dim"] is None:
            raise ValueError("free_bits needs a factorized posterior and prior with a "
                             "closed-form KL per dimension in every layer (Gaussian "
                             "posteriors, the standard normal prior on top).")
        return model.free_bits_units(core["rate_per_dim"])

    def _mmd(self, model, images, core, context):
        """MMD(q(z), p(z)) of the batch's top codes and as many prior draws, [B]."""
        batch = tf.shape(images)[0]
        top = core["codes"][0][0]
        draws = model.prior_draws(model.prior_distribution(context), batch)
        divergence = objectives.mmd(top, draws, self.mmd_kernel)
        return tf.fill([batch], divergence)

    def loss(self, model, terms):
        if self.free_bits:
            rate = objectives.free_bits_rate(terms["_rate_per_dim"], self.free_bits)
        else:
            rate = objectives.batch_mean(terms["rate"])
        loss = objectives.batch_mean(terms["distortion"]) + self.rate_weight(model) * rate
        if self.mmd_weight:
            loss += self.mmd_weight * objectives.batch_mean(terms["_mmd"])
        return minus_surrogate(loss, terms)


@keras.saving.register_keras_serializable(package="tfvae")
class IWAE(Objective):
    """The k-sample importance-weighted bound, k = the model's num_samples.

    Args:
        gradient_estimator: "reparameterization" or "dreg" (doubly reparameterized
            encoder gradient, Tucker et al. 2019).
    """

    gradient_estimators = ("reparameterization", "dreg")
    tracked_terms = ("iwae",)
    bound = "iwae"

    def __init__(self, gradient_estimator="reparameterization"):
        self.gradient_estimator = check_estimator(type(self), gradient_estimator)

    def terms(self, model, images, context=None, training=None, seed=None):
        features = model.encoder.features(images, training=training, context=context)
        if self.gradient_estimator == "dreg":
            core, log_weights, terms = self._dreg(model, images, features, context,
                                                  training, seed)
        else:
            core = model.log_weight_terms(images, model.num_samples, training=training,
                                          seed=seed, features=features, context=context)
            log_weights, terms = core["log_weights"], {}
        terms.update(model.bound_terms(core))
        terms["iwae"] = objectives.iwae_bound(log_weights)
        return terms

    @staticmethod
    def _dreg(model, images, features, context, training, seed):
        """(core, the log-weights whose gradient is taken, {"_surrogate"}): DReG's path
        terms through a tape at codes held fixed."""
        fixed, codes = fixed_codes(model, features, context, seed)
        with tf.GradientTape() as tape:
            tape.watch(fixed)
            core = model.log_weight_terms(images, model.num_samples, training=training,
                                          codes=fixed, features=features, context=context)
        surrogate = objectives.dreg_surrogate(tape, core["log_weights"], fixed, codes)
        # Direct terms only: log q's parameters get DReG's path terms instead.
        direct = core["log_px_z"] + core["log_p"] - tf.stop_gradient(core["log_q"])
        return core, direct, {"_surrogate": surrogate}

    def loss(self, model, terms):
        return minus_surrogate(-objectives.batch_mean(terms["iwae"]), terms)


@keras.saving.register_keras_serializable(package="tfvae")
class WakeSleep(Objective):
    """Wake-sleep (Hinton et al. 1995): the decoder and prior fit z ~ q(z|x) as data,
    the encoder fits the model's dreams. One stochastic layer and a prior of its own
    weights; the logged `elbo`, `rate` and `distortion` are the ELBO's, `loss` the
    wake-sleep loss, `sleep` -log q(z_d|x_d) of the dreams."""

    tracked_terms = ("sleep",)

    def check(self, model):
        if model.top_down or model.prior_uses_encoder:
            raise ValueError("objective='wake_sleep' needs separate recognition and "
                             "generative weights: no VampPrior, no top-down hierarchy.")

    def terms(self, model, images, context=None, training=None, seed=None):
        features = model.encoder.features(images, training=training, context=context)
        fixed, _ = fixed_codes(model, features, context, seed)
        core = model.log_weight_terms(images, model.num_samples, training=training,
                                      codes=fixed, features=features, context=context)
        # The wake phase: z is data to p.
        terms = {"_wake": -tf.reduce_mean(core["log_px_z"] + core["log_p"], axis=0)}
        terms.update(model.bound_terms(core))
        terms["sleep"] = self._sleep(model, images, context, training)
        return terms

    @staticmethod
    def _sleep(model, images, context, training):
        """-log q(z_d|x_d) of as many dreams as codes, [B * k]."""
        dreams = tf.shape(images)[0] * model.num_samples
        if context is not None:
            context = tf.tile(context, [model.num_samples, 1])
        z, x = model.dream(dreams, training, context)
        return -model.encoder(x, context=context, training=training).log_prob(z)

    def loss(self, model, terms):
        return objectives.wake_sleep_loss(terms["_wake"], terms["sleep"])


# The objectives by name: `VAE(loss=name)`, the trainer's --objective.
LOSSES = {"elbo": ELBO, "iwae": IWAE, "wake_sleep": WakeSleep}
GRADIENT_ESTIMATORS = tuple(dict.fromkeys(
    estimator for cls in LOSSES.values() for estimator in cls.gradient_estimators))
# The flat options of tfvae 0.1, with their defaults: `objective`, then the ELBO's.
FLAT_DEFAULTS = {"objective": "elbo", "gradient_estimator": "reparameterization",
                 **{name: default for name, default in arguments(ELBO).items()
                    if name != "gradient_estimator"}}
FLAT_OPTIONS = tuple(FLAT_DEFAULTS)


def name_of(objective):
    """The name of `objective` in LOSSES, or its class name."""
    return next((name for name, cls in LOSSES.items() if type(objective) is cls),
                type(objective).__name__)


def get(loss):
    """The objective `loss` names: an `Objective`, a name in LOSSES or a serialized
    objective (`keras.saving.serialize_keras_object`)."""
    if isinstance(loss, str):
        return LOSSES[choice("loss", loss, tuple(LOSSES))]()
    if isinstance(loss, dict):
        loss = keras.saving.deserialize_keras_object(loss)
    if not isinstance(loss, Objective):
        raise ValueError(f"loss must be one of {', '.join(LOSSES)}, an Objective or its "
                         f"config; got {loss!r}.")
    return loss


def from_flat_options(objective="elbo", gradient_estimator="reparameterization",
                      **elbo_options):
    """The objective that tfvae 0.1's flat options describe: `objective` names it;
    `gradient_estimator` and the ELBO's options (beta, free_bits, ...) are refused,
    in one line, where that objective does not take them."""
    cls = LOSSES[choice("objective", objective, tuple(LOSSES))]
    defaults, takes = arguments(ELBO), arguments(cls)
    unknown = sorted(set(elbo_options) - set(defaults))
    if unknown:
        raise TypeError(f"Unknown flat objective option(s) {', '.join(unknown)}.")
    chosen = {name: value for name, value in elbo_options.items() if name in takes}
    # The kernel alone changes nothing without an MMD weight (0.1 took it anywhere).
    if any(value != defaults[name] for name, value in elbo_options.items()
           if name not in takes and name != "mmd_kernel"):
        raise ValueError("beta, kl_warmup_steps, free_bits and the InfoVAE weights "
                         "apply to objective='elbo' only.")
    if "gradient_estimator" in takes:
        chosen["gradient_estimator"] = gradient_estimator
    elif gradient_estimator != FLAT_DEFAULTS["gradient_estimator"]:
        check_estimator(cls, gradient_estimator)  # another objective's: raises
    return cls(**chosen)


def resolve(loss="elbo", **flat_options):
    """The objective of a VAE's `loss` argument, or of the flat options given instead."""
    if not flat_options:
        return get(loss)
    if loss != "elbo":
        raise ValueError(f"Give loss= or the flat options ({', '.join(flat_options)}), "
                         "not both.")
    return from_flat_options(**flat_options)
