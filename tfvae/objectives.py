"""Objectives for variational autoencoders, as pure functions of tensors.

Notation: x an image, z ~ q(z|x) the encoder's posterior, p(x|z) the decoder's
likelihood, p(z) the prior. Per example (Kingma & Welling 2014, eq. 3, 10):

    distortion D = -E_q[log p(x|z)]            (a reconstruction cost, nats)
    rate       R = KL(q(z|x) || p(z))          (nats)
    ELBO       L = -(D + R) <= log p(x)

D is estimated with L reparameterized samples z_l = mu + sigma * eps_l. R is the
closed form `tfd.kl_divergence` where TFP registers one, else the Monte Carlo
estimate mean_l [log q(z_l|x) - log p(z_l)].

The family around the ELBO, each a knob of one loss rather than a new model:

* beta-VAE and KL warm-up: loss = D + w(t) R, w(t) = beta * min(1, t / T_warmup).
* free bits (Kingma et al. 2016): the rate of each latent dimension d, averaged over
  the minibatch, is clamped from below: R_fb = sum_d max(lambda, E_batch[KL_d]).
* IWAE (Burda et al. 2016): L_k = E[log 1/k sum_i w_i], w_i = p(x, z_i) / q(z_i|x);
  L_1 = ELBO <= L_k <= L_{k+1} <= log p(x).
* InfoVAE (Zhao et al. 2019), in its final form
      L_Info = E_x E_q[log p(x|z)] - (1 - alpha) KL(q(z|x) || p(z))
               - (alpha + lambda - 1) D(q(z) || p(z)),
  with D the maximum mean discrepancy between the aggregate posterior q(z) and p(z).
* Score-function (REINFORCE) gradient: grad E_q[f(z)] = E_q[(f(z) - b) grad log q(z|x)],
  unbiased for any baseline b that does not depend on z; high variance.
* DReG (Tucker et al. 2019), the doubly reparameterized IWAE encoder gradient:
  sum_i w~_i^2 d log w_i / d z_i * d z_i / d phi, with w~ the normalized weights and
  log q evaluated with its parameters held fixed. A prior that shares the encoder's
  weights (the VampPrior) keeps its direct term sum_i w~_i d log p(z_i) / d phi at
  fixed z: the identity that turns the score term into w~^2 path terms holds with
  every other occurrence of phi held fixed.

A sibling of the ELBO rather than a relative, wake-sleep (Hinton et al. 1995, the
baseline of Kingma & Welling 2014, section 5) gives the generative model p_theta and
the recognition model q_phi one loss each:

* wake:  max_theta E_x E_{z ~ q(z|x)}[log p(x, z)], z treated as data;
* sleep: max_phi E_{(z, x) ~ p(z) p(x|z)}[log q(z|x)] on dreams: z_d ~ p(z), then x_d a
  *sample* of p(x|z_d) (binary pixels for a Bernoulli decoder, as in Hinton et al.),
  not its mean. Sleep minimizes KL(p(z|x) || q(z|x)) averaged over p(x): the forward
  KL, where AEVB minimizes the reverse one (a diagonal q matches the posterior's
  marginal variances, not its precisions).

With no gradient through z, z_d or x_d the sum of the two losses has the wake
gradient w.r.t. theta and the sleep gradient w.r.t. phi, so one optimizer step does
both phases at once. No common objective is being followed; the ELBO is reported
alongside, estimated the same way as for AEVB.

Bits per dimension of a model of discrete data (8-bit levels): with log p(x) the
log-probability of an image of D = H * W * C values, in nats,

    bits/dim = -log p(x) / (D ln 2),

for the ELBO (an upper bound in bits) or the importance-sampled log p(x) alike.
Uniform levels take 8 bits/dim; no model of such data scores below its entropy.

Functions that return a gradient estimator return a *surrogate* whose value is zero and
whose gradient is the estimator, so the loss shown in logs stays the true objective.
"""

import math

import tensorflow as tf
import tensorflow_probability as tfp

from tfvae.checks import choice

tfd = tfp.distributions

KL_METHODS = ("auto", "analytic", "sampled")
MMD_KERNELS = ("imq", "rbf")


def has_analytic_kl(posterior, prior):
    """True when TFP registers a closed-form KL(posterior || prior)."""
    try:
        tfd.kl_divergence(posterior, prior)
    except NotImplementedError:
        return False
    return True


def sampled_kl(posterior, prior, z):
    """Monte Carlo KL, mean over the samples z [L, B, D] of log q(z|x) - log p(z)."""
    return tf.reduce_mean(posterior.log_prob(z) - prior.log_prob(z), axis=0)


def kl_divergence(posterior, prior, z, method="auto", log_q=None, log_p=None):
    """Rate per example [B] and, where it exists, per latent dimension [B, D].

    Args:
        posterior: q(z|x), batch [B] (or [k, B] for a layer below the top of a
            hierarchy, one posterior per sample of the layers above), event [D].
        prior: p(z), batch [] (or [k, B]), event [D].
        z: reparameterized samples [k, B, D] from the posterior (used when sampled).
        method: "analytic", "sampled" or "auto" (analytic when registered).
        log_q, log_p: log q(z|x) and log p(z) [k, B] when already computed.
    A closed form of a batch [k, B] is averaged over the k samples.
    """
    choice("kl method", method, KL_METHODS)
    analytic = has_analytic_kl(posterior, prior)
    if method == "analytic" and not analytic:
        raise ValueError(
            f"No closed-form KL is registered for {type(posterior).__name__} || "
            f"{prior.name}; use kl='sampled' or kl='auto'.")
    if method == "sampled" or not analytic:
        log_q = posterior.log_prob(z) if log_q is None else log_q
        log_p = prior.log_prob(z) if log_p is None else log_p
        return tf.reduce_mean(log_q - log_p, axis=0), None
    rate, per_dim = tfd.kl_divergence(posterior, prior), kl_per_dimension(posterior, prior)
    if rate.shape.rank == 2:
        rate = tf.reduce_mean(rate, axis=0)
        per_dim = None if per_dim is None else tf.reduce_mean(per_dim, axis=0)
    return rate, per_dim


def kl_per_dimension(posterior, prior):
    """KL of each factor [B, D] for factorized q and p (Independent over the last axis)."""
    if isinstance(posterior, tfd.Independent) and isinstance(prior, tfd.Independent):
        try:
            return tfd.kl_divergence(posterior.distribution, prior.distribution)
        except NotImplementedError:
            return None
    return None


def iwae_bound(log_weights):
    """log 1/k sum_i exp(log_weights_i) over axis 0: [k, B] -> [B]."""
    k = tf.cast(tf.shape(log_weights)[0], log_weights.dtype)
    return tf.reduce_logsumexp(log_weights, axis=0) - tf.math.log(k)


def bits_per_dim(log_px, num_dims):
    """-log_px / (num_dims ln 2): nats per image of discrete data -> bits per dimension.

    `log_px` is a log-probability (the ELBO or log p(x), not a log-density), a number,
    a numpy array or a tensor; `num_dims` is D = H * W * C.
    """
    if int(num_dims) <= 0:
        raise ValueError(f"bits_per_dim needs num_dims > 0, got {num_dims}.")
    return -log_px / (int(num_dims) * math.log(2.0))


def log_add_exp(a, b):
    """log(exp(a) + exp(b)), elementwise and stable."""
    m = tf.maximum(a, b)
    return m + tf.math.log(tf.exp(a - m) + tf.exp(b - m))


def chunked_log_mean_exp(chunk_log_weights, num_samples, chunk_size, seed=None):
    """log 1/k sum_{i<=k} w_i, drawing the k = num_samples weights chunk by chunk.

    The sum is accumulated with a running log-sum-exp (exact, not an approximation),
    so memory depends on the chunk size, not on k:
        log sum_i w_i = logaddexp(log sum_{chunk 1} w_i, log sum_{chunk 2} w_i, ...).

    Args:
        chunk_log_weights: (size, seed) -> [s, B], log-weights of `size` new draws
            (any [s, B] whose log-sum-exp over axis 0 is the chunk's log sum w).
        num_samples, chunk_size: Python ints give static chunk shapes (what XLA
            needs); scalar tensors a loop whose last chunk takes the remainder.
        seed: a stateless seed [2], folded with the chunk index; None draws from
            the global generator.
    Returns:
        [B] log-mean-exp estimates.
    """
    def chunk_sum(size, index):
        chunk_seed = None if seed is None else tf.random.experimental.stateless_fold_in(
            seed, index)
        return tf.reduce_logsumexp(chunk_log_weights(size, chunk_seed), axis=0)

    if isinstance(num_samples, int) and isinstance(chunk_size, int):
        chunk_size = min(chunk_size, num_samples)
        full, rest = divmod(num_samples, chunk_size)
        total = chunk_sum(chunk_size, 0)
        if full > 1:
            _, total = tf.while_loop(
                lambda i, _: i < full,
                lambda i, acc: (i + 1, log_add_exp(acc, chunk_sum(chunk_size, i))),
                (tf.constant(1), total), parallel_iterations=1)
        if rest:
            total = log_add_exp(total, chunk_sum(rest, full))
        return total - tf.math.log(float(num_samples))
    num_samples = tf.convert_to_tensor(num_samples, tf.int32)
    chunk_size = tf.minimum(tf.cast(chunk_size, tf.int32), num_samples)
    total = chunk_sum(chunk_size, 0)

    def body(done, acc):
        size = tf.minimum(chunk_size, num_samples - done)
        return done + size, log_add_exp(acc, chunk_sum(size, done))

    # One chunk at a time: parallel iterations would multiply the memory.
    _, total = tf.while_loop(lambda done, _: done < num_samples, body,
                             (chunk_size, total), parallel_iterations=1)
    return total - tf.math.log(tf.cast(num_samples, total.dtype))


def kl_weight(step, beta=1.0, warmup_steps=0):
    """w(t) = beta * min(1, t / warmup_steps); beta when warmup_steps is 0."""
    if warmup_steps <= 0:
        return tf.constant(beta, tf.float32)
    ramp = tf.cast(step, tf.float32) / float(warmup_steps)
    return beta * tf.minimum(1.0, ramp)


def batch_mean(values):
    """Mean over the batch axis that is 0, not NaN, for an empty batch.

    Under a multi-worker strategy the last, partial global batch can leave a worker
    with no example at all.
    """
    count = tf.cast(tf.shape(values)[0], values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values, axis=0), count)


def free_bits_rate(rate_per_dim, free_bits):
    """sum_d max(lambda, mean over the batch of KL_d): [B, D] -> scalar."""
    return tf.reduce_sum(tf.maximum(batch_mean(rate_per_dim), free_bits))


def _squared_distances(a, b):
    return tf.reduce_sum(tf.square(a[:, None, :] - b[None, :, :]), axis=-1)


def kernel_matrix(a, b, kernel="imq"):
    """k(a_i, b_j) for a [N, D], b [M, D], with a scale set by D (for p(z) = N(0, I)).

    imq: C / (C + ||a - b||^2), C = 2 D (Tolstikhin et al. 2018);
    rbf: exp(-||a - b||^2 / (2 D)).
    """
    dim = tf.cast(tf.shape(a)[-1], a.dtype)
    sq = _squared_distances(a, b)
    if kernel == "imq":
        return 2.0 * dim / (2.0 * dim + sq)
    if kernel == "rbf":
        return tf.exp(-sq / (2.0 * dim))
    raise ValueError(f"Unknown MMD kernel {kernel!r}; expected one of {MMD_KERNELS}.")


def mmd(a, b, kernel="imq"):
    """Unbiased estimate of MMD^2 between samples a [N, D] and b [M, D].

    0 when N or M is below 2 (no estimate; e.g. a last batch of one image), rather
    than 0 / 0 = NaN, which would poison the weights through the gradient.
    """
    n = tf.cast(tf.shape(a)[0], a.dtype)
    m = tf.cast(tf.shape(b)[0], b.dtype)

    def off_diagonal_mean(k, size):
        return (tf.reduce_sum(k) - tf.linalg.trace(k)) / tf.maximum(size * (size - 1.0),
                                                                    1.0)

    value = (off_diagonal_mean(kernel_matrix(a, a, kernel), n)
             + off_diagonal_mean(kernel_matrix(b, b, kernel), m)
             - 2.0 * tf.reduce_mean(kernel_matrix(a, b, kernel)))
    return tf.where((n > 1.0) & (m > 1.0), value, tf.zeros_like(value))


def leave_one_out_baseline(signal):
    """Baseline for each entry of `signal` [L, B] that excludes the entry itself.

    With L > 1 samples per example: the mean of the other samples of that example;
    with L = 1: the mean of the other examples in the batch. Either way it does not
    depend on the sample it is subtracted from, so the estimator stays unbiased.
    """
    axis = 0 if signal.shape[0] is not None and signal.shape[0] > 1 else 1
    count = tf.cast(tf.shape(signal)[axis], signal.dtype)
    total = tf.reduce_sum(signal, axis=axis, keepdims=True)
    return (total - signal) / tf.maximum(count - 1.0, 1.0)


def score_function_surrogate(signal, log_q):
    """Zero-valued surrogate whose gradient is the score-function estimator.

    d/d phi of the result = mean over samples of (f - b) d log q(z|x) / d phi, per
    example [B], for the learning signal f [L, B] (no gradient flows through it) and
    log q(z|x) [L, B] at samples z that carry no gradient.
    """
    signal = tf.stop_gradient(signal)
    advantage = signal - leave_one_out_baseline(signal)
    surrogate = tf.reduce_mean(advantage * log_q, axis=0)
    return surrogate - tf.stop_gradient(surrogate)


def normalized_weights(log_weights):
    """w~_i = w_i / sum_j w_j over axis 0, with no gradient."""
    return tf.stop_gradient(tf.nn.softmax(log_weights, axis=0))


def dreg_surrogate(tape, log_weights, fixed_codes, codes):
    """DReG for the encoder, per example [B].

    Args:
        tape: the `tf.GradientTape` that watched `fixed_codes` while `log_weights`
            [k, B] was computed from them.
        fixed_codes: the samples with no gradient, one tensor [k, B, D_l] per layer.
        codes: the same samples, reparameterized (they carry the encoder's gradient).

    The surrogate is zero-valued; its gradient w.r.t. the encoder is
    sum_i w~_i^2 d log w_i / d z_i d z_i / d phi, where d log w / d z is the partial
    derivative at fixed parameters (through every layer of a hierarchy). The caller
    takes the IWAE bound on log-weights whose log q carries no parameter gradient, so
    the decoder and prior get their usual IWAE gradient and the encoder none besides
    the surrogate's (and a VampPrior's direct term).
    """
    weights_sq = tf.square(normalized_weights(log_weights))
    paths = tape.gradient(log_weights, fixed_codes, output_gradients=weights_sq)
    surrogate = tf.add_n([tf.reduce_sum(tf.stop_gradient(path) * z, axis=[0, 2])
                          for path, z in zip(paths, codes)])
    return surrogate - tf.stop_gradient(surrogate)


def wake_sleep_loss(wake, sleep):
    """The wake-sleep loss: mean wake term [B] + mean sleep term [N] (a scalar).

    Args:
        wake: -log p(x, z) per example [B], at z ~ q(z|x) that carry no gradient.
        sleep: -log q(z_d|x_d) per dream [N], at dreams with no gradient.
    The wake term depends on the decoder (and a prior's own weights) only, the sleep
    term on the encoder only: the gradient of the sum is both phases' at once.
    """
    return batch_mean(wake) + batch_mean(sleep)
