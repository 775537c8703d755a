"""Tests of tfvae.sample_quality and tfvae.classifier against known answers.

Known answers: the symmetric square root of B^2 is B; the Frechet distance between
N(m1, diag(s1)) and N(m2, diag(s2)) is |m1 - m2|^2 + sum (sqrt(s1) - sqrt(s2))^2,
and for any two covariances tr (S1 S2)^(1/2) is the sum of the square roots of the
eigenvalues of S1 S2; KID is 0 in expectation for two sets from one distribution.
No real data: generated features and images, and tiny classifiers.
"""

import os

import numpy as np
import pytest

from tfvae import classifier as classifiers
from tfvae import sample_quality as sq


def test_sqrtm_psd_of_a_known_square():
    rng = np.random.default_rng(0)
    vectors = np.linalg.qr(rng.standard_normal([5, 5]))[0]
    root = vectors @ np.diag([3.0, 2.0, 1.0, 0.5, 0.0]) @ vectors.T  # PSD, singular
    np.testing.assert_allclose(sq.sqrtm_psd(root @ root), root, atol=1e-10)
    np.testing.assert_allclose(sq.sqrtm_psd([[4.0, 0.0], [0.0, 9.0]]), np.diag([2.0, 3.0]))
    # Rounding below zero (a PSD matrix of rank 1 seen in float32) gives no NaN.
    rank_one = np.outer([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).astype(np.float32)
    result = sq.sqrtm_psd(rank_one)
    assert np.all(np.isfinite(result))
    np.testing.assert_allclose(result @ result, rank_one, atol=1e-5)


def test_trace_sqrt_product_equals_the_eigenvalues_of_the_unsymmetric_product():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal([2, 6, 6])
    cov_1, cov_2 = a @ a.T, b @ b.T + np.eye(6)  # do not commute
    expected = np.sqrt(np.linalg.eigvals(cov_1 @ cov_2).real.clip(0)).sum()
    assert sq.trace_sqrt_product(cov_1, cov_2) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_two_known_gaussians():
    mean_1, mean_2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.0])
    var_1, var_2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    closed_form = ((mean_1 - mean_2) ** 2).sum() + ((np.sqrt(var_1) - np.sqrt(var_2))
                                                    ** 2).sum()  # 5 + 4 + 1 = 10
    assert closed_form == 10.0
    assert sq.frechet_distance(mean_1, np.diag(var_1), mean_2, np.diag(var_2)) == \
        pytest.approx(10.0, abs=1e-9)
    # From samples: within a few per cent at 20,000 points.
    rng = np.random.default_rng(2)
    x = mean_1 + np.sqrt(var_1) * rng.standard_normal([20_000, 3])
    y = mean_2 + np.sqrt(var_2) * rng.standard_normal([20_000, 3])
    assert sq.fid(x, y) == pytest.approx(10.0, rel=0.03)


def test_fid_of_two_samples_of_one_gaussian_is_small():
    rng = np.random.default_rng(3)
    mixing = rng.standard_normal([16, 16]) / 4
    x, y = (rng.standard_normal([2, 5000, 16]) @ mixing)
    value = sq.fid(x, y)
    assert 0 < value < 0.01 * np.trace(mixing.T @ mixing)  # a finite-N bias only
    assert sq.fid(x, x) == pytest.approx(0.0, abs=1e-9)


def test_mmd2_unbiased_matches_the_sums_written_out():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal([2, 5, 3])

    def k(a, b):
        return (a @ b / 3 + 1) ** 3

    within = sum(k(x[i], x[j]) + k(y[i], y[j])
                 for i in range(5) for j in range(5) if i != j) / 20
    across = sum(k(x[i], y[j]) for i in range(5) for j in range(5)) / 25
    assert sq.mmd2_unbiased(x, y) == pytest.approx(within - 2 * across, rel=1e-12)


def test_kid_is_zero_for_one_distribution_and_far_from_zero_against_noise():
    rng = np.random.default_rng(5)
    mixing = rng.standard_normal([32, 32]) / 6

    def draw(n):  # ReLU features, like a classifier's penultimate layer
        return np.maximum(rng.standard_normal([n, 32]) @ mixing + 0.3, 0)

    same, same_stderr = sq.kid(draw(2000), draw(2000), num_subsets=10)
    assert abs(same) < 3 * same_stderr
    noise = rng.random([2000, 32])
    far, far_stderr = sq.kid(draw(2000), noise, num_subsets=10)
    assert far > 10 * far_stderr and far > 10 * same_stderr
    with pytest.raises(ValueError, match="at least 2 subsets"):
        sq.kid(draw(10), draw(10), num_subsets=10)


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(6)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = np.repeat(np.arange(3), 50)
    points = centres[truth] + rng.standard_normal([150, 2])
    labels, centroids = classifiers.kmeans(points, 3, seed=0)
    # The same partition up to renaming: each cluster is one true group.
    for c in range(3):
        assert len(set(truth[labels == c])) == 1
    np.testing.assert_array_equal(classifiers.nearest(centres, centroids),
                                  labels[[0, 50, 100]])


CLASSES = 16  # a 4 x 4 grid of 4 x 4 blocks in 16 x 16 images


def pattern_means(labels):
    """The grey means [N, 16, 16, 1] of class ids [N]: class c lights the c-th block
    with probability 0.9, the rest with 0.1."""
    means = np.full([len(labels), 16, 16, 1], 0.1, np.float32)
    for i, c in enumerate(labels):
        row, col = divmod(int(c), 4)
        means[i, 4 * row:4 * row + 4, 4 * col:4 * col + 4] = 0.9
    return means


def patterns(count, seed=0):
    """Binary images drawn from `pattern_means` of random classes, and the classes."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, count)
    means = pattern_means(labels)
    return (rng.random(means.shape) < means).astype(np.float32), labels


@pytest.fixture
def tiny_judge(tmp_path):
    """An untrained classifier of the patterns, through its .keras file."""
    path = str(tmp_path / "judge.keras")
    classifiers.save(classifiers.build((16, 16, 1), CLASSES, units=16), path)
    return classifiers.load(path)


@pytest.mark.slow
def test_cas_is_high_on_separable_classes_and_chance_on_shuffled_labels(tiny_judge):
    images, labels = patterns(1600, seed=1)
    test_images, test_labels = patterns(800, seed=2)
    score = sq.classification_accuracy_score(tiny_judge, images, labels, test_images,
                                             test_labels, epochs=20)
    assert score > 0.95
    # Shuffled, the labels say nothing of the images: each class of image ends up with
    # some label, its own with chance 1/16, so the accuracy is about 1/16 (the number
    # of classes that keep their label is about Poisson(1): 4 or more in 2% of draws).
    shuffled = np.random.default_rng(3).permutation(labels)
    score = sq.classification_accuracy_score(tiny_judge, images, shuffled, test_images,
                                             test_labels, epochs=20)
    assert score < 4 / CLASSES


def test_bernoulli_draws_of_the_true_means_match_binary_data_and_the_means_do_not(
        tiny_judge):
    real, _ = patterns(2000, seed=4)
    rng = np.random.default_rng(5)

    def perfect_model(count, labels):  # the likelihood means of the real data
        return pattern_means(rng.integers(0, CLASSES, count))

    drawn = sq.evaluate_samples(perfect_model, real, tiny_judge, num_samples=1000,
                                num_subsets=5, log=None)
    assert drawn["sample_images"] == "bernoulli draws"
    assert abs(drawn["kid"]) < 3 * drawn["kid_stderr"] + 3 * drawn["floor"]["kid_stderr"]
    means = sq.evaluate_samples(perfect_model, real, tiny_judge, num_samples=1000,
                                num_subsets=5, draw_bernoulli=False, log=None)
    assert means["sample_images"] == "means"
    assert means["kid"] > 10 * means["kid_stderr"] and means["kid"] > 10 * abs(drawn["kid"])
    assert means["fid"] > 10 * drawn["fid"]
    # The floor is two disjoint sets of real images: the same figure either way.
    assert drawn["floor"] == means["floor"]


@pytest.mark.slow
def test_a_conditional_report_has_cas_and_label_consistency(tiny_judge):
    real, labels = patterns(2400, seed=6)
    classifiers.train(tiny_judge, (real, labels), epochs=20)
    asked = []

    def conditional_model(count, requested):  # the true means of the requested classes
        asked.append(requested)
        return pattern_means(requested)

    report = sq.evaluate_samples(conditional_model, real, tiny_judge, num_samples=1200,
                                 real_labels=labels, num_subsets=5, cas_epochs=20,
                                 log=None)
    requested = np.concatenate(asked)
    assert len(requested) == 1200 and set(requested) <= set(range(CLASSES))
    assert report["label_consistency"] > 0.9
    assert report["cas"] > 0.9 and report["cas_real"] > 0.9
    with pytest.raises(ValueError, match="1200 samples need as many real images"):
        sq.evaluate_samples(conditional_model, real[:1000], tiny_judge, num_samples=1200,
                            real_labels=labels[:1000], log=None)


def test_classifier_files_refused_in_one_line(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        classifiers.load(str(tmp_path / "missing.keras"))
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="cannot be read as a .keras classifier"):
        classifiers.load(str(bad))
    with pytest.raises(ValueError, match="ships no classifier for binary images of cifar10"):
        classifiers.for_dataset("cifar10")
    with pytest.raises(ValueError, match="no classifier for grey images of mnist"):
        classifiers.for_dataset("mnist", binary=False)


@pytest.mark.parametrize("dataset, binary", [
    ("binarized_mnist", True), ("fashion_mnist", True), ("fashion_mnist", False)])
def test_the_shipped_classifiers_load_with_their_records(dataset, binary):
    judge, record = classifiers.for_dataset(dataset, binary)
    assert record.get("grey_levels", False) is not binary
    assert judge.input_shape == (None, 28, 28, 1)
    assert judge.get_layer(classifiers.FEATURES).units == 128
    assert record["num_classes"] == judge.output_shape[-1] == 10
    assert 0.8 < record["test_accuracy"] <= 1.0


@pytest.mark.slow
def test_evaluate_tool_reports_sample_quality_and_refuses_bad_flags_in_one_line(tmp_path):
    import json
    import subprocess
    import sys

    from pattern_data import binary_images, save_npy
    from tiny_models import tiny_vae

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    model = tiny_vae((16, 16, 1), seed=0)
    model(binary_images(2, (16, 16, 1)))
    model.save(str(tmp_path / "model.keras"))
    images = save_npy(tmp_path, "images", binary_images(60, (16, 16, 1)))
    judge = str(tmp_path / "judge.keras")
    classifiers.save(classifiers.build((16, 16, 1), 4, units=8), judge)
    other = str(tmp_path / "other.keras")
    classifiers.save(classifiers.build((28, 28, 1), 4, units=8), other)
    output = str(tmp_path / "report.json")
    common = [str(tmp_path / "model.keras"), f"--images={images}", "--num_samples=0",
              "--verbose=0", "--nojit_compile", "--sample_quality", "--quality_samples=20"]
    cases = {"good": [f"--quality_classifier={judge}", f"--output={output}"],
             "missing": [f"--quality_classifier={tmp_path / 'none.keras'}"],
             "other shape": [f"--quality_classifier={other}"],
             "shipped for MNIST": [],
             "too many": [f"--quality_classifier={judge}", "--quality_samples=100"]}
    with open(tmp_path / "cases.json", "w") as f:
        json.dump([common + args for args in cases.values()], f)
    done = subprocess.run(
        [sys.executable, os.path.join(repo, "tests", "cli_driver.py"), "tools.evaluate",
         str(tmp_path / "cases.json"), str(tmp_path / "results.json")], cwd=repo,
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        outcomes = dict(zip(cases, json.load(f)))
    good = outcomes.pop("good")
    assert good["code"] == 0, good["stderr"][-3000:]
    assert "sample quality: KID" in good["stdout"] and "floor" in good["stdout"]
    with open(output) as f:
        quality = json.load(f)["sample_quality"]
    assert quality["num_samples"] == 20 and quality["sample_images"] == "bernoulli draws"
    assert np.isfinite([quality["kid"], quality["fid"], quality["floor"]["fid"]]).all()
    assert quality["classifier"] == judge
    expected = {"missing": "none.keras does not exist",
                "other shape": "takes images of (28, 28, 1), the model makes (16, 16, 1)",
                "shipped for MNIST": "binarized_mnist.keras takes images of (28, 28, 1)",
                "too many": "--quality_samples=100 needs as many test images, and "
                            "there are 60"}
    for case, words in expected.items():
        outcome = outcomes[case]
        assert outcome["code"] == 1 and "Traceback" not in outcome["stderr"], outcome
        line = outcome["stderr"].strip().splitlines()[-1]
        assert line.startswith("tools.evaluate: error: ") and words in line, line


@pytest.mark.slow
def test_train_classifier_refuses_grey_levels_of_binarized_mnist_in_one_line(tmp_path):
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    done = subprocess.run(
        [sys.executable, "-m", "tools.train_classifier", "--dataset=binarized_mnist",
         "--grey_levels", f"--output_dir={tmp_path}"], cwd=repo, capture_output=True,
        text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "tools.train_classifier: error: --grey_levels is for fashion_mnist "
        "(binarized_mnist has no grey levels).")
    assert not os.listdir(tmp_path)


SHARED_MNIST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "..", "shared", "data", "binarized_mnist")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_MNIST),
                    reason=f"{SHARED_MNIST} not found: the real binarized MNIST")
def test_the_shipped_models_rank_above_the_floor_and_the_hierarchy_above_the_baseline(
        tmp_path):
    """On the real test set (2,000 samples against 2,000 test images): FID orders the
    floor < the shipped hierarchy < the baseline, and KID puts the baseline above both."""
    import tensorflow as tf

    from tfvae import data, rundir
    from tfvae import evaluate as ev

    test = data.load_dataset("binarized_mnist", "test", 1000, shuffle=False,
                             data_dir=str(tmp_path), manual_dir=SHARED_MNIST)
    real = np.concatenate([batch.numpy() for batch in test])
    judge, _ = classifiers.for_dataset("binarized_mnist")
    reports = {}
    for name in ("hvae_binarized_mnist", "vae_binarized_mnist"):
        functions = ev.saved_model_functions(tf.saved_model.load(
            rundir.locate_model(name)["path"]))
        reports[name] = sq.evaluate_samples(functions["sample"], real, judge, 2000,
                                            log=None)
    floor, hvae, vae = (reports["hvae_binarized_mnist"]["floor"],
                        reports["hvae_binarized_mnist"], reports["vae_binarized_mnist"])
    assert floor["fid"] < hvae["fid"] < vae["fid"]
    assert max(floor["kid"], hvae["kid"]) + 3 * vae["kid_stderr"] < vae["kid"]


@pytest.mark.parametrize("architecture", classifiers.ARCHITECTURES)
def test_each_classifier_architecture_round_trips_and_predicts_deterministically(
        tmp_path, architecture):
    images = np.random.default_rng(0).random((8, 16, 16, 1)).astype(np.float32)
    judge = classifiers.build((16, 16, 1), CLASSES, units=8, architecture=architecture)
    path = str(tmp_path / "judge.keras")
    classifiers.save(judge, path)
    loaded = classifiers.load(path)
    logits = loaded.predict(images, verbose=0)
    # The wide one's random shifts and flips act in training only.
    np.testing.assert_array_equal(logits, loaded.predict(images, verbose=0))
    np.testing.assert_allclose(logits, judge.predict(images, verbose=0), atol=1e-6)
    assert loaded.get_layer(classifiers.FEATURES).units == 8


def test_an_unknown_classifier_architecture_is_refused_in_one_line():
    with pytest.raises(ValueError, match="architecture 'deep': one of"):
        classifiers.build((16, 16, 1), CLASSES, architecture="deep")


def test_the_shipped_judge_of_label_consistency_loads_with_its_record():
    import json

    path = classifiers.shipped_path("fashion_mnist_grey_wide")
    with open(path.replace(".keras", ".json"), encoding="utf-8") as f:
        record = json.load(f)
    judge = classifiers.load(path)
    assert record["architecture"] == "wide" and record["grey_levels"] is True
    assert judge.input_shape == (None, 28, 28, 1) and judge.output_shape[-1] == 10
    assert any("batch_normalization" in layer.name for layer in judge.layers)
    assert 0.9 < record["test_accuracy"] <= 1.0


def test_a_classifier_of_other_images_or_classes_is_refused_in_one_line():
    judge = classifiers.build((16, 16, 1), CLASSES, units=8)
    classifiers.check_fits(judge, (16, 16, 1), "judge.keras", CLASSES)
    with pytest.raises(ValueError, match=r"judge.keras takes images of \(16, 16, 1\), "
                                         r"the model makes \(28, 28, 1\)\.$"):
        classifiers.check_fits(judge, (28, 28, 1), "judge.keras")
    with pytest.raises(ValueError, match=f"judge.keras tells {CLASSES} classes apart, "
                                         "the model has 10.$"):
        classifiers.check_fits(judge, (16, 16, 1), "judge.keras", 10)


def test_a_model_with_an_autoregressive_head_is_judged_by_its_draws(monkeypatch):
    """Its means are the greedy path's conditionals (grey, and one image per z that
    the model never draws); its samples for the judge are ancestral draws of p(x|z):
    binary, and on a fixed z they vary from draw to draw. Without a head: the means."""
    import keras
    import tensorflow as tf

    from tiny_models import tiny_spatial_model, tiny_vae

    from tfvae import pixelcnn

    head = tiny_spatial_model(autoregressive_layers=2)
    with monkeypatch.context() as patch:  # the draws need no greedy path (a mean)
        patch.setattr(pixelcnn.AutoregressiveBernoulli, "greedy_logits", None)
        draws = np.asarray(sq.model_sampler(head)(6))
    assert draws.shape == (6, 8, 8, 1) and set(np.unique(draws)) <= {0.0, 1.0}
    z = tf.zeros([64, head.latent_dim])
    assert len({np.asarray(x).tobytes() for x in head.decode(z).sample()}) > 1
    plain = tiny_vae(seed=0)
    keras.utils.set_random_seed(1)
    means = np.asarray(sq.model_sampler(plain)(6))
    keras.utils.set_random_seed(1)
    np.testing.assert_array_equal(means, plain.sample(6))
    assert not set(np.unique(means)) <= {0.0, 1.0}
