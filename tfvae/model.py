"""The variational autoencoder: a `keras.Model` holding encoder, decoder and prior.

`call(images)` returns per-example terms (nats): `elbo`, `rate` = KL(q(z|x) || p(z)),
`distortion` = -E_q[log p(x|z)] and those the training objective adds (`iwae`, the
k-sample bound; `sleep` = -log q(z_d|x_d) of dreams for wake-sleep). `compute_loss`
turns them into the scalar training loss, so the stock `fit` / `evaluate` loops,
distribution strategies, XLA and mixed precision all work unchanged; the progress
bar shows the epoch means of `loss`, `elbo`, `rate` and `distortion` (and, for a
likelihood of 8-bit levels, `bits_per_dim` = -elbo / (D ln 2)). The objective
is an object (`losses.py`: ELBO with beta, warm-up, free bits, InfoVAE and
score-function gradients; IWAE with DReG; wake-sleep) that works through the public
seam below: `log_weight_terms`, `sampled_codes`, `bound_terms`, `free_bits_units`,
`prior_distribution`, `prior_draws`, `dream` and the parts; the model never asks
which objective it trains.

Conditional VAEs (Sohn et al. 2015): with `num_classes` (class labels, one-hot) or
`context_dim` (any float vector) the context c enters the encoder q(z|x, c), the
decoder p(x|z, c) (it reads [z, c]), the first top-down state of a hierarchy and,
with a `ConditionalPrior`, the prior p(z|c). Every term above is then conditional:
`elbo` bounds log p(x|c). Inputs are dicts, {"images": x, "labels": y} (or
"context": c [B, C] for vectors), everywhere an unconditional model takes images:
`fit` on a dataset of such dicts, `elbo`, `log_importance_weights`, `encode`, ...;
`sample(n, labels=...)`. An unconditional model reads the "images" of such a dict
and ignores the rest.
"""

import inspect

import keras
import numpy as np
import tensorflow as tf

from tfvae import distributions, evaluate, heads, losses, model_inputs
from tfvae import objectives, presets
from tfvae.checks import choice, layer_temperatures
from tfvae.conditioning import Conditioning, join
from tfvae.guidance import check_guidance, guided_likelihood
from tfvae.priors import StandardNormalPrior
from tfvae.version import __version__

METRIC_NAMES = ("elbo", "rate", "distortion")


def in_multi_worker_mode(strategy=None):
    """True when `strategy` (default: the current one) is a MultiWorkerMirroredStrategy
    that spans more than one worker."""
    strategy = strategy or tf.distribute.get_strategy()
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


@keras.saving.register_keras_serializable(package="tfvae")
class VAE(keras.Model):
    """Variational autoencoder trained on the ELBO or one of its relatives.

    Args:
        encoder: layer mapping images [B, H, W, C] to q(z|x) (batch [B], event [D]),
            e.g. `MLPEncoder` or `ConvEncoder`.
        decoder: layer mapping z [B, D] to p(x|z) (event [H, W, C]), e.g. `MLPDecoder`.
        prior: layer returning p(z) (of the top layer) when called as
            `prior(encoder=encoder)`; `StandardNormalPrior(D)` when None.
        top_down: `TopDownBlock`s of the layers below the top, top first (see
            `hierarchy.py`); none for a single stochastic layer. With blocks, the
            encoder's head gives q(z_L|x), and the decoder reads [z_1, h_1].
        num_samples: samples of z per example: L for the ELBO, k for IWAE.
        kl: "analytic", "sampled" or "auto" (closed form when TFP registers one).
        loss: the training objective (`losses.py`): "elbo", "iwae", "wake_sleep"
            or a `losses.Objective` such as `losses.IWAE(gradient_estimator="dreg")`;
            kept as `training_objective`. The flat options of tfvae 0.1 (objective=,
            gradient_estimator=, beta=, kl_warmup_steps=, free_bits=, info_alpha=,
            info_lambda=, mmd_kernel=) are taken instead of it
            (`losses.from_flat_options`), so older `.keras` files load.
        num_classes: condition on class labels 0..num_classes-1 (one-hot), the
            "labels" of the inputs; 0 for none.
        context_dim: condition on float vectors [B, context_dim], the "context" of
            the inputs; 0 for none. The encoder must have been built with
            context_dim = num_classes or context_dim (`build_model` does that).
        context_dropout: share of training rows whose labels are replaced by none
            (zeros), so that the model learns p(x) beside p(x|y) and samples with
            classifier-free guidance (`guidance.py`); 0 for none.
    """

    def __init__(self, encoder, decoder, prior=None, num_samples=1, kl="auto",
                 loss="elbo", num_classes=0, context_dim=0, context_dropout=0.0,
                 top_down=(), **kwargs):
        flat = {name: kwargs.pop(name) for name in losses.FLAT_OPTIONS if name in kwargs}
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.top_down = list(top_down)
        self.prior = prior if prior is not None else StandardNormalPrior(encoder.latent_dim)
        self.num_samples = int(num_samples)
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples!r}.")
        self.kl = choice("kl", kl, objectives.KL_METHODS)
        self.training_objective = losses.resolve(loss, **flat)
        self.conditioning = Conditioning(num_classes, context_dim)
        self.num_classes, self.context_dim = int(num_classes), int(context_dim)
        self.context_dropout = float(context_dropout)
        self.training_objective.check(self)
        self._check_context()
        self.image_shape = tuple(decoder.output_shape)
        prior_dim = getattr(self.prior, "latent_dim", encoder.latent_dim)
        if prior_dim != encoder.latent_dim:
            raise ValueError(f"The prior's latent_dim {prior_dim} differs from the "
                             f"encoder's latent_dim {encoder.latent_dim}.")
        prior_images = tuple(getattr(self.prior, "image_shape", self.image_shape))
        if prior_images != self.image_shape:
            raise ValueError(f"The prior's pseudo-inputs have shape {prior_images}, the "
                             f"model's images {self.image_shape}.")
        if self.prior_uses_encoder and not getattr(encoder, "diagonal_gaussian", False):
            raise ValueError(f"{type(self.prior).__name__} mixes the encoder's posteriors; "
                             "it needs the Gaussian posterior on top (use the IAF in "
                             "lower layers).")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in (
            *self.metric_names, *self.training_objective.tracked_terms)}
        # Built here, from the decoder's image shape, so that `fit` never needs a
        # symbolic pass (which cannot carry distributions) and `.keras` files reload.
        self.build((None, *self.image_shape))

    @property
    def context_width(self):
        """Size of the context c: num_classes (one-hot) or context_dim; 0 if none."""
        return self.conditioning.width

    @property
    def context_key(self):
        """The inputs' key of the context: "labels", "context" or None."""
        return self.conditioning.key

    def given_context(self, labels, count):
        """The context [count, C] of `labels` (one, or one per sample or code), or
        None for an unconditional model (`Conditioning.given`)."""
        return self.conditioning.given(labels, count)

    @property
    def conditional_prior(self):
        """The prior takes the context: p(z|c) (`priors.Prior.conditional`)."""
        return bool(getattr(self.prior, "conditional", False))

    @property
    def prior_uses_encoder(self):
        """The prior is built from the encoder's posteriors (`Prior.uses_encoder`)."""
        return bool(getattr(self.prior, "uses_encoder", False))

    def _check_context(self):
        if getattr(self.encoder, "context_dim", 0) != self.context_width:
            raise ValueError(f"The encoder takes a context of size "
                             f"{getattr(self.encoder, 'context_dim', 0)}, the model "
                             f"{self.context_width} (build it with context_dim="
                             f"{self.context_width}).")
        if self.conditional_prior and getattr(
                self.prior, "context_dim", None) != self.context_width:
            raise ValueError("A conditional prior needs the model's context: give "
                             "num_classes or context_dim of the prior's size.")
        if not 0 <= self.context_dropout < 1 or (
                self.context_dropout and not self.num_classes):
            raise ValueError(f"context_dropout is the share of training labels "
                             f"dropped for guidance: in [0, 1), for a class-conditional "
                             f"model only; got {self.context_dropout} for a model of "
                             f"{self.num_classes} classes.")
        if self.context_width and self.prior_uses_encoder:
            raise ValueError(f"{type(self.prior).__name__} mixes unconditional "
                             "posteriors; a conditional model takes "
                             "prior='standard_normal', 'mixture' or 'conditional'.")

    @property
    def objective(self):
        """The training objective's name ("elbo", "iwae", "wake_sleep"; a class name
        for one outside `losses.LOSSES`)."""
        return losses.name_of(self.training_objective)

    # -- building and checking -------------------------------------------------

    def build(self, input_shape):
        # Sublayers restored from a `.keras` file arrive already built.
        for layer, shape in ((self.encoder, tuple(input_shape)), (self.prior, None)):
            if not layer.built:
                layer.build(shape)
        # What the decoder reads: [z, c] for one layer, a block's `decoder_input`.
        above = (None, self.encoder.latent_dim + self.context_width)
        if self.top_down:
            features = self.encoder.features(
                tf.zeros([1, *tuple(input_shape)[1:]]),
                context=tf.zeros([1, self.context_width]))
            for index, block in enumerate(self.top_down, start=1):
                if not block.built:
                    feature = features[max(0, len(features) - 1 - index)]
                    block.build((above, tuple(feature.shape)))
                above = block.decoder_input_shape(self.context_width)
        if not self.decoder.built:
            self.decoder.build(above)
        self.built = True

    def split_inputs(self, inputs):
        """(images [B, H, W, C] float32, context [B, C] float32 or None) of `inputs`:
        images, or a dict {"images": ..., "labels" or "context": ...}."""
        if isinstance(inputs, dict):
            if "images" not in inputs:
                raise ValueError(f"VAE inputs are images or a dict with 'images'; got "
                                 f"the keys {sorted(inputs)}.")
            images, context = inputs["images"], inputs.get(self.context_key)
        else:
            images, context = inputs, None
        images = model_inputs.images_tensor(images, self.image_shape)
        if not self.context_width:
            return images, None
        if context is None:
            model_inputs.refuse_missing_context(self)
        return images, self.conditioning.tensor(context, tf.shape(images)[0])

    # -- the probabilistic model -----------------------------------------------

    @property
    def num_layers(self):
        return 1 + len(self.top_down)

    @property
    def latent_dims(self):
        """Sizes of z_L, ..., z_1 (top first); one entry for a single-layer VAE."""
        return (self.encoder.latent_dim, *(b.latent_dim for b in self.top_down))

    @property
    def latent_dim(self):
        """Size of all layers' codes together (what `decode` takes)."""
        return sum(self.latent_dims)

    def encode(self, inputs, training=None):
        """q(z_L|x) (q(z_L|x, c) when conditional), the top layer's posterior: batch
        [B], event [latent_dims[0]]."""
        images, context = self.split_inputs(inputs)
        return self.encoder(images, context=context, training=training)

    def prior_distribution(self, context=None):
        """p(z_L), the top layer's prior: batch [], event [latent_dims[0]]; for a
        conditional prior p(z_L|c) of contexts c [B, C], batch [B]."""
        if self.conditional_prior:
            return self.prior(encoder=self.encoder, context=context)
        return self.prior(encoder=self.encoder)

    def prior_draws(self, prior, num_samples):
        """num_samples draws [n, D] of the top prior (one per context row if conditional)."""
        return prior.sample() if self.conditional_prior else prior.sample(num_samples)

    def walk(self, features, choose, context=None):
        """The stochastic layers, top first, each z_l chosen by `choose`.

        Args:
            features: the encoder's bottom-up features (`encoder.features`), or None
                to walk the generative model alone (prior samples, decoding codes).
            choose: (index, posterior or None, prior) -> (z_l, log q(z_l) or None).
            context: c [B, C] of a conditional model, else None; it joins every
                top-down state's input and the decoder's.
        Returns:
            (layers, decoder input), layers a list of dicts with z, posterior, prior,
            log_q, top first.
        """
        layers, state, z = [], None, None
        for index in range(self.num_layers):
            if index == 0:
                posterior = None if features is None else \
                    self.encoder.top_posterior(features[-1])
                prior = self.prior_distribution(context)
            else:
                block = self.top_down[index - 1]
                state = block.state(z, state, context)
                prior = block.prior_distribution(state)
                posterior = None if features is None else block.posterior_distribution(
                    state, features[max(0, len(features) - 1 - index)])
            z, log_q = choose(index, posterior, prior)
            layers.append({"z": z, "posterior": posterior, "prior": prior,
                           "log_q": log_q})
        if not self.top_down:
            return layers, join(z, context)
        return layers, self.top_down[-1].decoder_input(z, state, context)

    def _split_codes(self, z):
        return tf.split(z, list(self.latent_dims), axis=-1)

    def _sampler(self, num_samples, seed=None):
        """choose() that draws z_l ~ q (k samples of the top, one path below each)."""
        seeds = (None,) * self.num_layers if seed is None else \
            tf.unstack(tf.random.experimental.stateless_split(seed, self.num_layers))

        def choose(index, posterior, prior):
            shape = [num_samples] if index == 0 else []
            return posterior.experimental_sample_and_log_prob(shape, seed=seeds[index])
        return choose

    def sample(self, num_samples, return_codes=False, labels=None, temperature=1.0,
               guidance=0.0):
        """Images (the likelihood's mean) decoded from `num_samples` draws of p(z)
        (of p(z|c) and p(x|z, c), for the `labels` of a conditional model: one class
        id, or one per sample; one vector or one per sample for a context_dim model).
        `temperature` t scales every layer's Gaussian prior scale by t (z = m + t (z'
        - m), `distributions.at_temperature`), or one t per layer, top first; 1 draws
        from the model itself. `guidance` w > 0 moves each prior mean away from the
        unconditional one by w times their difference (classifier-free guidance,
        `guidance.py`; a model trained with `context_dropout`); a pair (w, v) guides
        the image by v too."""
        likelihood, codes = self.generate(num_samples, labels, temperature, guidance)
        return (likelihood.mean(), codes) if return_codes else likelihood.mean()

    def generate(self, num_samples, labels=None, temperature=1.0, guidance=0.0):
        """(p(x|z), z [num_samples, D]) at z drawn from the prior as `sample` draws it
        (its arguments): the likelihood to take a mean or a draw of. An autoregressive
        head's distribution computes neither until asked (784 steps each)."""
        temperatures = layer_temperatures(temperature, self.num_layers)
        context = self.given_context(labels, num_samples)
        weight, image_weight = check_guidance(self, guidance)
        if weight or image_weight:
            return guided_likelihood(self, num_samples, context, temperatures, weight,
                                     image_weight)

        def choose(index, posterior, prior):
            z = self.prior_draws(prior, num_samples) if index == 0 else prior.sample()
            return distributions.at_temperature(prior, z, temperatures[index]), None

        layers, inputs = self.walk(None, choose, context)
        codes = tf.concat([layer["z"] for layer in layers], axis=-1)
        return self.decoder(inputs), codes

    def dream(self, num_dreams, training=None, context=None):
        """(z, x) ~ p(z) p(x|z), [N, D] and [N, H, W, C], with no gradient: the sleep
        phase's data. x is a sample of the likelihood, not its mean (binary pixels for
        a Bernoulli decoder, as in Hinton et al. 1995). One stochastic layer; a
        conditional model dreams given its contexts [N, C]."""
        z = self.prior_draws(self.prior_distribution(context), num_dreams)
        x = self.decoder(join(z, context), training=training).sample()
        return tf.stop_gradient(z), tf.stop_gradient(x)

    def decode(self, z, labels=None, training=None):
        """p(x|z) (p(x|z, c)) for the codes of all layers, concatenated top first
        [..., B, latent_dim]; `labels` as for `sample`, one per code row."""
        z = tf.convert_to_tensor(z, tf.float32)
        return self._decode(z, self.given_context(labels, tf.shape(z)[-2]), training)

    def _decode(self, z, context, training=None):
        codes = self._split_codes(z)
        _, inputs = self.walk(None, lambda index, posterior, prior: (codes[index], None),
                               context)
        return self.decoder(inputs, training=training)

    def posterior_codes(self, inputs, training=None):
        """(codes [B, latent_dim], the layers as `walk` lists them, the decoder's
        input) at the posterior's code of each layer (a Gaussian's mean), top first."""
        images, context = self.split_inputs(inputs)
        features = self.encoder.features(images, training=training, context=context)

        def choose(index, posterior, prior):
            head = self.encoder if index == 0 else self.top_down[index - 1]
            return head.code(posterior), None

        layers, decoder_input = self.walk(features, choose, context)
        return tf.concat([layer["z"] for layer in layers], axis=-1), layers, decoder_input

    def code(self, inputs):
        """The codes a person looks at, all layers concatenated top first [B, D]."""
        return self.posterior_codes(inputs)[0]

    def reconstruct(self, inputs):
        """Decode of the posterior codes: the reconstruction a user looks at."""
        return self.decoder(self.posterior_codes(inputs)[2]).mean()

    def log_likelihood(self, inputs, z, training=None):
        """log p(x|z) [k, B] for images [B, ...] and all layers' codes z [k, B, D]."""
        images, context = self.split_inputs(inputs)
        return self._decode(tf.convert_to_tensor(z, tf.float32), context,
                            training).log_prob(images)

    # -- the one core: per-sample log-weights and the named terms -----------------

    def log_weight_terms(self, images, num_samples, training=None, codes=None,
                         seed=None, features=None, context=None):
        """Per-sample terms of log w = log p(x|z) + log p(z) - log q(z|x), z ~ q
        (every factor given c for a conditional model).

        Args:
            images: [B, H, W, C] (checked; `split_inputs` gives images and context).
            num_samples: k samples of z per image.
            codes: score these codes (a list per layer, top first, [k, B, D_l])
                instead of sampling.
            seed: a stateless seed [2] for the samples.
            features: the encoder's bottom-up features, when already computed.
            context: c [B, C] of a conditional model.
        Returns:
            {"log_weights", "log_px_z", "log_p", "log_q": [k, B]; "codes": the list
             of z_l; "rates": [B] per layer, top first; "rate_per_dim": [B, D] or
             None where a layer's KL has no closed form per dimension}.
        """
        if features is None:
            features = self.encoder.features(images, training=training, context=context)
        if codes is None:
            choose = self._sampler(num_samples, seed)
        else:
            def choose(index, posterior, prior):
                return codes[index], posterior.log_prob(codes[index])
        layers, inputs = self.walk(features, choose, context)
        log_px_z = self.decoder(inputs, training=training).log_prob(images)
        rates, per_dims, log_p = [], [], 0.0
        for layer in layers:
            layer_log_p = layer["prior"].log_prob(layer["z"])
            log_p += layer_log_p
            rate, per_dim = objectives.kl_divergence(
                layer["posterior"], layer["prior"], layer["z"], self.kl,
                log_q=layer["log_q"], log_p=layer_log_p)
            rates.append(rate)
            per_dims.append(per_dim)
        log_q = tf.add_n([layer["log_q"] for layer in layers])
        return {"log_weights": log_px_z + log_p - log_q, "log_px_z": log_px_z,
                "log_p": log_p, "log_q": log_q, "codes": [l["z"] for l in layers],
                "rates": rates, "rate_per_dim": None if any(
                    p is None for p in per_dims) else tf.concat(per_dims, axis=-1)}

    def log_importance_weights(self, inputs, num_samples, seed=None):
        """log w_k = log p(x, z_k) - log q(z_k|x), z_k ~ q(z|x): [k, B] (given c)."""
        images, context = self.split_inputs(inputs)
        return self.log_weight_terms(images, num_samples, training=False, seed=seed,
                                     context=context)["log_weights"]

    def elbo(self, inputs, num_samples=None, seed=None):
        """Per-example `elbo`, `rate` and `distortion` [B] (nats), and `rate/l` per
        layer for a hierarchy; of log p(x|c) for a conditional model."""
        images, context = self.split_inputs(inputs)
        terms = self.bound_terms(self.log_weight_terms(
            images, num_samples or self.num_samples, training=False, seed=seed,
            context=context))
        return {name: terms[name] for name in self.metric_names}

    def bound_terms(self, core):
        """The ELBO's terms of a `log_weight_terms` core, what every objective reports:
        `elbo`, `rate`, `distortion` [B], `rate/l` per layer of a hierarchy and, for
        a discretized likelihood, `bits_per_dim` of the ELBO (`objectives.bits_per_dim`)."""
        rate = tf.add_n(core["rates"])
        distortion = -tf.reduce_mean(core["log_px_z"], axis=0)
        terms = {"elbo": -(distortion + rate), "rate": rate, "distortion": distortion}
        if self.num_layers > 1:
            for index, layer_rate in enumerate(core["rates"]):
                terms[f"rate/{self.num_layers - index}"] = layer_rate
        if self.discretized:
            terms["bits_per_dim"] = objectives.bits_per_dim(
                terms["elbo"], int(np.prod(self.image_shape)))
        return terms

    @property
    def discretized(self):
        """True for a likelihood of 8-bit levels: its bound is also in bits/dim."""
        return distributions.is_discretized(getattr(self.decoder, "likelihood", None))

    @property
    def autoregressive(self):
        """True for a decoder with a PixelCNN head (`pixelcnn.py`): its mean is the
        greedy path's conditionals, its draws ancestral."""
        return bool(getattr(self.decoder, "autoregressive_layers", 0))

    @property
    def metric_names(self):
        layers = (f"rate/{l}" for l in range(1, self.num_layers + 1)) \
            if self.num_layers > 1 else ()
        bits = ("bits_per_dim",) if self.discretized else ()
        return (*METRIC_NAMES, *layers, *bits)

    def free_bits_units(self, rate_per_dim):
        """[B, U] rates of the units free bits apply to, from [B, D] per dimension:
        each dimension, or what a layer's `kl_units` groups (a spatial group's
        channel maps, their KL summed over positions)."""
        parts = tf.split(rate_per_dim, list(self.latent_dims), axis=-1)
        return tf.concat([getattr(head, "kl_units", tf.identity)(part) for head, part
                          in zip((self.encoder, *self.top_down), parts)], axis=-1)

    def sampled_codes(self, features, num_samples, seed=None, context=None):
        """z_l ~ q of every layer, top first ([k, B, D_l]: k samples of the top, one
        path below each), from the encoder's features."""
        layers, _ = self.walk(features, self._sampler(num_samples, seed), context)
        return [layer["z"] for layer in layers]

    # -- objective ---------------------------------------------------------------

    def call(self, inputs, training=None):
        """Per-example terms of the training objective (`losses.Objective.terms`);
        keys with '_' are its own."""
        images, context = self.split_inputs(inputs)
        if training and self.context_dropout:
            context = self.conditioning.dropped(context, self.context_dropout)
        return self.training_objective.terms(self, images, context, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None,
                     training=True):
        loss = self.training_objective.loss(self, y_pred)
        if self.losses:
            loss += tf.add_n(self.losses)
        for name, tracker in self.trackers.items():
            tracker.update_state(y_pred[name])
        # Keras sums gradients over replicas; scale so that the sum is the mean.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return loss / replicas if replicas > 1 else loss

    def fit(self, x=None, y=None, *args, **kwargs):
        model_inputs.refuse_targets(self, x, y)
        if "validation_data" in kwargs:
            kwargs["validation_data"] = model_inputs.checked(
                self, kwargs["validation_data"], "validation_data")
        with model_inputs.one_line_data_errors():
            return super().fit(model_inputs.checked(self, x), y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        model_inputs.refuse_targets(self, x, y)
        with model_inputs.one_line_data_errors():
            return super().evaluate(model_inputs.checked(self, x), y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        with model_inputs.one_line_data_errors():
            return super().predict(model_inputs.checked(self, x), *args, **kwargs)

    def log_px(self, data, num_samples=1000, batch_size=100, seed=0, verbose=0):
        """Importance-sampled log p(x) (log p(x|c) when conditional) in nats, with
        k = `num_samples` (`evaluate.importance_sampled_log_px`) of `data`: images
        (0-255 integers are divided by 255), a dict of a conditional model's inputs,
        or a `tf.data.Dataset`. Returns an `evaluate.Estimate`: `.mean` nats per
        image, `.stderr` its standard error, `.values` per image."""
        with model_inputs.one_line_data_errors():
            return evaluate.importance_sampled_log_px(
                self, model_inputs.checked(self, data, "data"), num_samples, batch_size,
                seed=seed, verbose=verbose)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        results = super().compute_metrics(x, y, y_pred, sample_weight)
        if in_multi_worker_mode():
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
        return {**super().get_config(),  # name, trainable, dtype policy
                **{name: serialize(getattr(self, name))
                   for name in ("encoder", "decoder", "prior")},
                "top_down": [serialize(block) for block in self.top_down],
                "loss": serialize(self.training_objective),
                **{name: getattr(self, name) for name in OPTIONS},
                # The writer of a .keras file, named when another version cannot
                # read it (checks.load_keras_model).
                "tfvae_version": __version__}

    @classmethod
    def from_preset(cls, preset, saved_models=None):
        """The trained model of a shipped model by name, e.g.
        `VAE.from_preset("hvae_binarized_mnist")` (its highest version with a `.keras`
        file), or of a version folder, run directory or `.keras` file; names are
        looked up in `saved_models` (a folder or a list), by default as
        `tfvae.presets` says. Raises `tfvae.checks.InputError` in one line."""
        return presets.load(preset, saved_models)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config.pop("tfvae_version", None)  # files before 0.2.0 record none
        for key in ("encoder", "decoder", "prior"):
            config[key] = keras.saving.deserialize_keras_object(config[key])
        config["top_down"] = [keras.saving.deserialize_keras_object(block)
                              for block in config.get("top_down", ())]
        return cls(**config)


# VAE's keyword arguments with plain values. get_config and the trainer's flags (their
# defaults) read them from this signature; the objective's are `losses.FLAT_OPTIONS`.
OPTIONS = tuple(name for name, p in inspect.signature(VAE.__init__).parameters.items()
                if p.default is not p.empty and name not in ("prior", "top_down", "loss"))
