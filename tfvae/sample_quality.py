r"""How good are a model's samples: KID, FID, CAS and label consistency.

All four read images through a classifier (`tfvae.classifier`); KID and FID compare
the features f(x) (its penultimate layer, F = 128 numbers) of N samples with those of
N real test images drawn at random (never a prefix: test rows can be ordered).

KID (Binkowski et al. 2018, "Demystifying MMD GANs"): the squared maximum mean
discrepancy with the cubic polynomial kernel k(a, b) = (a.b / F + 1)^3, estimated
without bias within a subset of m samples x and m real images y:

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} [k(x_i, x_j) + k(y_i, y_j)]
              - 2/m^2 sum_{i,j} k(x_i, y_j)

KID is the mean of MMD^2_u over S disjoint subsets (both sets shuffled with the seed,
then cut into S parts of m = N // S), and its standard error is their standard
deviation / sqrt(S). Disjoint subsets give independent estimates, so that s.e. is
honest; the usual 100 overlapping subsets of 1000 drawn from 5000 share images, and
their spread / sqrt(100) would understate the error. KID is 0 in expectation when the
two sets come from one distribution (it may then come out slightly negative).

FID (Heusel et al. 2017): the Frechet distance between Gaussians fitted to the two
sets of features (means mu, covariances S, float64):

    FID = |mu_1 - mu_2|^2 + tr S_1 + tr S_2 - 2 tr (S_1 S_2)^(1/2)

S_1 S_2 is not symmetric, and a general matrix square root of it (scipy's sqrtm) can
return complex parts and NaN from rounding. It is similar to the symmetric positive
semi-definite A = S_1^(1/2) S_2 S_1^(1/2) (S_1 S_2 = S_1^(1/2) A S_1^(-1/2) for an
invertible S_1; by continuity the eigenvalues agree for a singular one too), so both
have the same eigenvalues l_i >= 0 and tr (S_1 S_2)^(1/2) = sum_i sqrt(l_i). Here
S_1^(1/2) = V diag(sqrt(w)) V^T from numpy's symmetric eigendecomposition
S_1 = V diag(w) V^T, and the eigenvalues of A come from `eigvalsh` of its symmetrized
form; rounding below zero is clipped to 0 in both (`sqrtm_psd`, `trace_sqrt_product`).
FID is biased upward at finite N: compare figures at the same N (the floor, two
disjoint sets of N real images, shows the bias).

Which images: a Bernoulli model of binary data (binarized MNIST) is a distribution over
binary images, and its `sample` signature returns the likelihood's means (grey
probabilities). Means set against binary test images differ in kind, whatever the
quality (a perfect model's means are still grey), so its samples are drawn,
x ~ Bernoulli(mean), with the seed, to be the kind of image the real ones are
(`bernoulli_draws`). Models of grey levels (Gaussian, discretized) are judged by their
means, as the tools show them. An autoregressive head (`pixelcnn.py`) has no
closed-form mean: its means are the conditionals along the greedy path, one image per
z that the model never draws, so a `VAE` with one is judged by its ancestral draws
x ~ p(x|z) (`model_sampler`; binary already, the Bernoulli draw keeps them), and its
SavedModel by its `sample` signature's `draws` (`evaluate.saved_model_functions`;
exported before 2026-12-07 it has none: its images are the greedy path, judge its
`.keras` file).

CAS (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative
Models"), for a class-conditional model: a fresh classifier of the judging classifier's
architecture is trained on the N samples with the labels they were asked for, and
its accuracy on the N real test images is the score; the same training on N other
real images gives the reference a perfect model would reach. Label consistency: the
fraction of samples that the (shipped) classifier itself assigns to the requested
class. Samples are asked for with the labels of the N real images, so both sets have
the same classes in the same proportions.
"""

import math
import time

import numpy as np

from tfvae import classifier as classifiers
from tfvae.checks import is_binary

SAMPLE_BATCH = 1000  # samples drawn per call of the model


# -- the matrix square root and FID ---------------------------------------------------

def sqrtm_psd(matrix):
    """The symmetric square root of a symmetric positive semi-definite matrix (its
    symmetric part; eigenvalues rounded below zero count as 0)."""
    matrix = np.asarray(matrix, np.float64)
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def trace_sqrt_product(cov_1, cov_2):
    """tr (S_1 S_2)^(1/2) = sum of sqrt(eigenvalues of S_1^(1/2) S_2 S_1^(1/2))."""
    root = sqrtm_psd(cov_1)
    inner = root @ np.asarray(cov_2, np.float64) @ root
    values = np.linalg.eigvalsh((inner + inner.T) / 2)
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def gaussian_fit(features):
    """(mean [F], covariance [F, F]) of features [N, F], float64, covariance / (N - 1)."""
    features = np.asarray(features, np.float64)
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mean_1, cov_1, mean_2, cov_2):
    """The squared Frechet (2-Wasserstein) distance between N(mean_1, cov_1) and
    N(mean_2, cov_2)."""
    difference = np.asarray(mean_1, np.float64) - np.asarray(mean_2, np.float64)
    return float(difference @ difference + np.trace(cov_1) + np.trace(cov_2)
                 - 2 * trace_sqrt_product(cov_1, cov_2))


def fid(features_1, features_2):
    """FID of two sets of features [N, F], [M, F]."""
    return frechet_distance(*gaussian_fit(features_1), *gaussian_fit(features_2))


# -- KID ---------------------------------------------------------------------------------

def polynomial_kernel(a, b):
    """k(a_i, b_j) = (a_i . b_j / F + 1)^3 [N, M] of features a [N, F], b [M, F]."""
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """The unbiased estimate of MMD^2 with the cubic polynomial kernel between x and
    y, [m, F] each (m >= 2)."""
    m = len(x)
    k_xx, k_yy, k_xy = (polynomial_kernel(x, x), polynomial_kernel(y, y),
                        polynomial_kernel(x, y))
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.mean())


def kid(features_1, features_2, num_subsets=10, seed=0):
    """(KID, its standard error): MMD^2_u averaged over `num_subsets` disjoint subsets
    of each set, shuffled with `seed` (module docstring)."""
    features_1 = np.asarray(features_1, np.float64)
    features_2 = np.asarray(features_2, np.float64)
    size = min(len(features_1), len(features_2)) // num_subsets
    if num_subsets < 2 or size < 2:
        raise ValueError(f"KID needs at least 2 subsets of at least 2 images; "
                         f"{min(len(features_1), len(features_2))} images make "
                         f"{num_subsets} subsets of {size}.")
    rng = np.random.default_rng(seed)
    order_1, order_2 = rng.permutation(len(features_1)), rng.permutation(len(features_2))
    estimates = [mmd2_unbiased(features_1[order_1[s * size:(s + 1) * size]],
                               features_2[order_2[s * size:(s + 1) * size]])
                 for s in range(num_subsets)]
    return float(np.mean(estimates)), float(np.std(estimates, ddof=1)
                                            / math.sqrt(num_subsets))


def distances(features_1, features_2, num_subsets=10, seed=0):
    """{"kid", "kid_stderr", "fid"} of two sets of features."""
    value, stderr = kid(features_1, features_2, num_subsets, seed)
    return {"kid": value, "kid_stderr": stderr, "fid": fid(features_1, features_2)}


# -- samples and the protocol --------------------------------------------------------------

def bernoulli_draws(means, seed=0):
    """float32 binary images x ~ Bernoulli(means), drawn with `seed`."""
    means = np.asarray(means, np.float32)
    return (np.random.default_rng(seed).random(means.shape) < means).astype(np.float32)


def model_sampler(model):
    """`(count, labels or None) -> images` of a `VAE`: the likelihood's means, or for
    a decoder with an autoregressive head ancestral draws of p(x|z) at z ~ p(z)
    (module docstring; `VAE.generate`: no greedy path is run for them)."""
    if not model.autoregressive:
        return lambda count, labels=None: model.sample(count, labels=labels)
    return lambda count, labels=None: model.generate(count, labels)[0].sample()


def draw_samples(sample, count, labels=None):
    """Images [count, ...] from `sample(n, labels or None)`, in calls of at most
    `SAMPLE_BATCH`."""
    parts = []
    for start in range(0, count, SAMPLE_BATCH):
        stop = min(start + SAMPLE_BATCH, count)
        parts.append(np.asarray(sample(stop - start, None if labels is None
                                       else labels[start:stop]), np.float32))
    return np.concatenate(parts)


def classification_accuracy_score(judge, images, labels, test_images, test_labels,
                                  epochs=5, seed=0, num_classes=None):
    """CAS: the test accuracy of a fresh copy of `judge` (same architecture, new
    weights, `num_classes` outputs: by default as many as `judge`) trained on
    `images` with `labels`."""
    student = classifiers.fresh_copy(judge, seed, num_classes)
    classifiers.train(student, (images, labels), epochs, seed)
    return classifiers.accuracy(student, test_images, test_labels)


def evaluate_samples(sample, real_images, judge, num_samples=5000, real_labels=None,
                     draw_bernoulli=None, num_subsets=10, cas_epochs=5, seed=0,
                     label_consistency=True, log=print):
    """The sample-quality report of a model.

    Args:
        sample: `(count, labels or None) -> images [count, H, W, C]`, the model's
            sampler (likelihood means, as the `sample` signature returns them).
        real_images: real test images [M, H, W, C], as the model's data are (binary
            for a model of binarized images).
        judge: the classifier whose features and architecture are used.
        num_samples: N, the samples drawn and the real images they are compared to
            (N of the M, drawn with `seed`); N other real images, when M >= 2N, give
            the floor.
        real_labels: class ids [M] of a conditional model's test images (samples are
            asked for with the labels of the N real images), else None.
        draw_bernoulli: judge Bernoulli draws of the samples (module docstring);
            None: when the real images are binary.
        num_subsets: KID's disjoint subsets.
        cas_epochs: epochs of the CAS classifiers.
        label_consistency: whether `judge` classifies the model's classes (a
            classifier of k-means clusters does not): then label consistency.
        log: where progress lines go (None: nowhere).

    Returns:
        A JSON-serializable dict: kid, kid_stderr, fid, num_samples, sample_images
        ("bernoulli draws" or "means"), seconds; "floor" (kid, kid_stderr, fid of N
        real images against N others) when there are 2N; for a conditional model
        label_consistency, cas and cas_real (the reference).
    """
    log = log or (lambda *args: None)
    start = time.perf_counter()
    real_images = np.asarray(real_images, np.float32)
    count = int(num_samples)
    if count > len(real_images):
        raise ValueError(f"{count} samples need as many real images to compare with, "
                         f"and there are {len(real_images)}; ask for fewer samples.")
    order = np.random.default_rng(seed).permutation(len(real_images))
    chosen, others = order[:count], order[count:2 * count]
    labels = None if real_labels is None else np.asarray(real_labels)[chosen]
    if draw_bernoulli is None:
        draw_bernoulli = is_binary(real_images)
    log(f"drawing {count} samples ...")
    images = draw_samples(sample, count, labels)
    if draw_bernoulli:
        images = bernoulli_draws(images, seed)
    real_features = classifiers.features(judge, real_images[chosen])
    report = distances(classifiers.features(judge, images), real_features,
                       num_subsets, seed)
    report.update(num_samples=count, num_subsets=num_subsets,
                  sample_images="bernoulli draws" if draw_bernoulli else "means")
    if len(others) == count:
        report["floor"] = distances(classifiers.features(judge, real_images[others]),
                                    real_features, num_subsets, seed)
    if labels is not None:
        if label_consistency:
            report["label_consistency"] = classifiers.accuracy(judge, images, labels)
        log(f"training the CAS classifiers ({cas_epochs} epochs each) ...")
        classes, real_chosen = int(np.max(real_labels)) + 1, real_images[chosen]
        report["cas"] = classification_accuracy_score(
            judge, images, labels, real_chosen, labels, cas_epochs, seed, classes)
        if len(others) == count:
            report["cas_real"] = classification_accuracy_score(
                judge, real_images[others], np.asarray(real_labels)[others],
                real_chosen, labels, cas_epochs, seed, classes)
        report["cas_epochs"] = cas_epochs
    report["seconds"] = time.perf_counter() - start
    return report


def summary(report):
    """The report in a few lines of text."""
    lines = [f"KID: {report['kid']:.5f} +- {report['kid_stderr']:.5f}, "
             f"FID: {report['fid']:.3f} ({report['num_samples']} samples, "
             f"{report['sample_images']}, against as many test images)"]
    if "floor" in report:
        floor = report["floor"]
        lines.append(f"floor (as many other test images): KID {floor['kid']:.5f} +- "
                     f"{floor['kid_stderr']:.5f}, FID {floor['fid']:.3f}")
    if "cas" in report:
        reference = (f" (trained on real images: {report['cas_real']:.4f})"
                     if "cas_real" in report else "")
        consistency = (f"; label consistency: {report['label_consistency']:.4f}"
                       if "label_consistency" in report else "")
        lines.append(f"CAS: {report['cas']:.4f}{reference}{consistency}")
    return "\n".join(lines)
