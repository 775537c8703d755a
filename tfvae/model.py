"""The variational autoencoder: a `keras.Model` holding encoder, decoder and prior.

`call(images)` returns per-example terms (nats): `elbo`, `rate` = KL(q(z|x) || p(z)),
`distortion` = -E_q[log p(x|z)] (and `iwae`, the k-sample bound, when that is the
objective). `compute_loss` turns them into the scalar training loss, so the stock
`fit` / `evaluate` loops, distribution strategies, XLA and mixed precision all work
unchanged; the progress bar shows the epoch means of `loss`, `elbo`, `rate` and
`distortion`. The objective family (beta, warm-up, free bits, IWAE, DReG, InfoVAE,
score-function gradients) is chosen by arguments; see `objectives.py` for the maths.
"""

import keras
import tensorflow as tf

from tfvae import objectives
from tfvae.priors import StandardNormalPrior

OBJECTIVES = ("elbo", "iwae")
GRADIENT_ESTIMATORS = ("reparameterization", "score_function", "dreg")
METRIC_NAMES = ("elbo", "rate", "distortion")


def _choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"Unknown {name} {value!r}; expected one of {', '.join(choices)}.")
    return value


def _flatten_samples(z):
    """[L, B, D] -> [L * B, D]."""
    return tf.reshape(z, [-1, tf.shape(z)[-1]])


@keras.saving.register_keras_serializable(package="tfvae")
class VAE(keras.Model):
    """Variational autoencoder trained on the ELBO or one of its relatives.

    Args:
        encoder: layer mapping images [B, H, W, C] to q(z|x) (batch [B], event [D]),
            e.g. `MLPEncoder` or `ConvEncoder`.
        decoder: layer mapping z [B, D] to p(x|z) (event [H, W, C]), e.g. `MLPDecoder`.
        prior: layer returning p(z) when called as `prior(encoder=encoder)`;
            `StandardNormalPrior(D)` when None.
        num_samples: samples of z per example: L for the ELBO, k for IWAE.
        kl: "analytic", "sampled" or "auto" (closed form when TFP registers one).
        objective: "elbo" or "iwae".
        gradient_estimator: "reparameterization", "score_function" (REINFORCE with
            a leave-one-out baseline; ELBO only) or "dreg" (IWAE only).
        beta: weight of the rate (beta-VAE).
        kl_warmup_steps: steps of the linear ramp of the rate weight from 0 to beta.
        free_bits: minimum rate per latent dimension (nats), 0 to disable.
        info_alpha, info_lambda: InfoVAE weights; the loss gains
            (alpha + lambda - 1) * MMD(q(z), p(z)) and the rate is scaled by 1 - alpha.
            The defaults (0, 1) give the plain ELBO.
        mmd_kernel: "imq" or "rbf".
    """

    def __init__(self, encoder, decoder, prior=None, num_samples=1, kl="auto",
                 objective="elbo", gradient_estimator="reparameterization", beta=1.0,
                 kl_warmup_steps=0, free_bits=0.0, info_alpha=0.0, info_lambda=1.0,
                 mmd_kernel="imq", **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.prior = prior if prior is not None else StandardNormalPrior(encoder.latent_dim)
        self.num_samples = int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
        self.kl = _choice("kl", kl, objectives.KL_METHODS)
        self.objective = _choice("objective", objective, OBJECTIVES)
        self.gradient_estimator = _choice("gradient_estimator", gradient_estimator,
                                          GRADIENT_ESTIMATORS)
        self.beta = float(beta)
        self.kl_warmup_steps = int(kl_warmup_steps)
        self.free_bits = float(free_bits)
        self.info_alpha = float(info_alpha)
        self.info_lambda = float(info_lambda)
        self.mmd_kernel = _choice("mmd_kernel", mmd_kernel, objectives.MMD_KERNELS)
        self._check_combination()
        self.image_shape = tuple(decoder.image_shape)
        prior_dim = getattr(self.prior, "latent_dim", encoder.latent_dim)
        if prior_dim != encoder.latent_dim:
            raise ValueError(f"The prior's latent_dim {prior_dim} differs from the "
                             f"encoder's latent_dim {encoder.latent_dim}.")
        prior_images = tuple(getattr(self.prior, "image_shape", self.image_shape))
        if prior_images != self.image_shape:
            raise ValueError(f"The prior's pseudo-inputs have shape {prior_images}, the "
                             f"model's images {self.image_shape}.")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}
        if self.objective == "iwae":
            self.trackers["iwae"] = keras.metrics.Mean(name="iwae")
        # Built here, from the decoder's image shape, so that `fit` never needs a
        # symbolic pass (which cannot carry distributions) and `.keras` files reload.
        self.build((None, *self.image_shape))

    @property
    def mmd_weight(self):
        return self.info_alpha + self.info_lambda - 1.0

    def _check_combination(self):
        if self.objective == "iwae" and (
                self.beta != 1.0 or self.kl_warmup_steps or self.free_bits
                or self.mmd_weight or self.info_alpha):
            raise ValueError("beta, kl_warmup_steps, free_bits and the InfoVAE weights "
                             "apply to objective='elbo' only.")
        if self.gradient_estimator == "dreg" and self.objective != "iwae":
            raise ValueError("gradient_estimator='dreg' needs objective='iwae'.")
        if self.gradient_estimator == "score_function" and self.objective != "elbo":
            raise ValueError("gradient_estimator='score_function' needs objective='elbo'.")
        if self.gradient_estimator == "score_function" and self.mmd_weight:
            raise ValueError("gradient_estimator='score_function' gives the encoder no "
                             "gradient of the InfoVAE MMD term; use 'reparameterization'.")
        if self.free_bits < 0 or self.beta < 0 or self.kl_warmup_steps < 0:
            raise ValueError("beta, kl_warmup_steps and free_bits must be >= 0.")

    # -- building and checking -------------------------------------------------

    def build(self, input_shape):
        # Sublayers restored from a `.keras` file arrive already built.
        for layer, shape in ((self.encoder, tuple(input_shape)),
                             (self.decoder, (None, self.encoder.latent_dim)),
                             (self.prior, None)):
            if not layer.built:
                layer.build(shape)
        self.built = True

    def _check_images(self, images):
        images = tf.convert_to_tensor(images)
        if images.dtype != tf.float32:
            if not (images.dtype.is_floating or images.dtype.is_integer):
                raise ValueError(f"VAE expects float32 images in [0, 1], got {images.dtype}.")
            images = tf.cast(images, tf.float32)
        shape = tuple(images.shape)
        if len(shape) != 4 or any(
                got is not None and got != want
                for got, want in zip(shape[1:], self.image_shape)):
            raise ValueError(
                f"VAE expects images of shape (batch, {', '.join(map(str, self.image_shape))}),"
                f" got {shape}.")
        return images

    # -- the probabilistic model -----------------------------------------------

    def encode(self, images, training=None):
        """q(z|x): a distribution with batch [B] and event [latent_dim]."""
        return self.encoder(self._check_images(images), training=training)

    def decode(self, z, training=None):
        """p(x|z): a distribution with batch [B] and event [H, W, C]."""
        return self.decoder(z, training=training)

    def prior_distribution(self):
        """p(z): batch [], event [latent_dim]."""
        return self.prior(encoder=self.encoder)

    def sample(self, num_samples, return_codes=False):
        """Images (the likelihood's mean) decoded from `num_samples` draws of p(z)."""
        z = self.prior_distribution().sample(num_samples)
        images = self.decode(z).mean()
        return (images, z) if return_codes else images

    def reconstruct(self, images):
        """Decode of the posterior mean: the reconstruction a user looks at."""
        return self.decode(self.encode(images).mean()).mean()

    def log_likelihood(self, images, z, training=None):
        """log p(x|z) [L, B] for images [B, ...] and codes z [L, B, D]."""
        num = tf.shape(z)[0]
        likelihood = self.decoder(_flatten_samples(z), training=training)
        tiled = tf.tile(images[None], [num, 1, 1, 1, 1])
        flat = tf.reshape(tiled, tf.concat([[-1], tf.shape(images)[1:]], axis=0))
        return tf.reshape(likelihood.log_prob(flat), tf.shape(z)[:2])

    def log_importance_weights(self, images, num_samples):
        """log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q: [k, B]."""
        images = self._check_images(images)
        posterior = self.encoder(images)
        prior = self.prior_distribution()
        z = posterior.sample(num_samples)
        return (self.log_likelihood(images, z) + prior.log_prob(z)
                - posterior.log_prob(z))

    def elbo(self, images, num_samples=None):
        """Per-example `elbo`, `rate` and `distortion` [B] (nats)."""
        terms = self._terms(self._check_images(images), training=False,
                            num_samples=num_samples)
        return {name: terms[name] for name in METRIC_NAMES}

    # -- objective ---------------------------------------------------------------

    def call(self, images, training=None):
        """Per-example terms of the objective; keys with '_' are internal."""
        return self._terms(self._check_images(images), training=training)

    def _terms(self, images, training=None, num_samples=None):
        num_samples = num_samples or self.num_samples
        posterior = self.encoder(images, training=training)
        prior = self.prior_distribution()
        z = posterior.sample(num_samples)  # [L, B, D], reparameterized
        if self.gradient_estimator == "score_function":
            z = tf.stop_gradient(z)
        terms = {}
        if self.gradient_estimator == "dreg":
            fixed = tf.nest.map_structure(tf.stop_gradient, posterior, expand_composites=True)
            saved = {}

            def log_weights_fn(z_fixed):
                saved["log_px_z"] = self.log_likelihood(images, z_fixed, training)
                return saved["log_px_z"] + prior.log_prob(z_fixed) - fixed.log_prob(z_fixed)

            terms["_surrogate"], log_weights = objectives.dreg_surrogate(log_weights_fn, z)
            log_px_z = saved["log_px_z"]
        else:
            log_px_z = self.log_likelihood(images, z, training)
        rate, rate_per_dim = objectives.kl_divergence(posterior, prior, z, self.kl)
        distortion = -tf.reduce_mean(log_px_z, axis=0)
        terms.update(elbo=-(distortion + rate), rate=rate, distortion=distortion)
        if self.objective == "iwae":
            if self.gradient_estimator != "dreg":
                log_weights = log_px_z + prior.log_prob(z) - posterior.log_prob(z)
            terms["iwae"] = objectives.iwae_bound(log_weights)
        if self.gradient_estimator == "score_function":
            signal = log_px_z
            # A sampled rate at stopped z has no path gradient: its score term goes in f.
            if self.kl == "sampled" or not objectives.has_analytic_kl(posterior, prior):
                signal = signal - self._rate_weight() * (
                    posterior.log_prob(z) - prior.log_prob(z))
            terms["_surrogate"] = objectives.score_function_surrogate(
                signal, posterior.log_prob(z))
        if self.free_bits:
            if rate_per_dim is None:
                raise ValueError("free_bits needs a factorized posterior and prior with a "
                                 "closed-form KL per dimension (the standard normal prior).")
            terms["_rate_per_dim"] = rate_per_dim
        if self.mmd_weight:
            batch = tf.shape(images)[0]
            divergence = objectives.mmd(z[0], prior.sample(batch), self.mmd_kernel)
            terms["_mmd"] = tf.fill([batch], divergence)
        return terms

    def _rate_weight(self):
        optimizer = getattr(self, "optimizer", None)  # absent before compile()
        step = optimizer.iterations if optimizer is not None else 0
        return objectives.kl_weight(step, self.beta * (1.0 - self.info_alpha),
                                    self.kl_warmup_steps)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        terms = y_pred
        if self.objective == "iwae":
            loss = -objectives.batch_mean(terms["iwae"])
        else:
            if self.free_bits:
                rate = objectives.free_bits_rate(terms["_rate_per_dim"], self.free_bits)
            else:
                rate = objectives.batch_mean(terms["rate"])
            loss = objectives.batch_mean(terms["distortion"]) + self._rate_weight() * rate
            if self.mmd_weight:
                loss += self.mmd_weight * objectives.batch_mean(terms["_mmd"])
        if "_surrogate" in terms:
            loss -= objectives.batch_mean(terms["_surrogate"])
        if self.losses:
            loss += tf.add_n(self.losses)
        for name, tracker in self.trackers.items():
            tracker.update_state(terms[name])
        # Keras sums gradients over replicas; scale so that the sum is the mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = super().compute_metrics(x, y, y_pred, sample_weight)
        strategy = tf.distribute.get_strategy()
        if (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
                and strategy.extended._in_multi_worker_mode()):
            # Keras 3 reduces step logs across workers along axis 0, which fails for
            # scalars (tensorflow/tensorflow#72388); [1]-vectors reduce to the mean.
            results = {name: tf.reshape(value, [1]) for name, value in results.items()}
        return results

    def predict_step(self, data):
        terms = super().predict_step(data)
        return {k: v for k, v in terms.items() if not k.startswith("_")}

    # -- serialization -----------------------------------------------------------

    def get_config(self):
        serialize = keras.saving.serialize_keras_object
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": serialize(self.encoder),
            "decoder": serialize(self.decoder),
            "prior": serialize(self.prior),
            "num_samples": self.num_samples,
            "kl": self.kl,
            "objective": self.objective,
            "gradient_estimator": self.gradient_estimator,
            "beta": self.beta,
            "kl_warmup_steps": self.kl_warmup_steps,
            "free_bits": self.free_bits,
            "info_alpha": self.info_alpha,
            "info_lambda": self.info_lambda,
            "mmd_kernel": self.mmd_kernel,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("encoder", "decoder", "prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)
