r"""Load test of `tools.serve` on loopback: concurrent clients, good and bad requests.

    nice -n 19 python -m tools.load_test --model_dir=saved_models/vae_binarized_mnist
    python -m tools.load_test --model_dir=saved_models/cvae_fashion_mnist \
        --url=http://127.0.0.1:8501/v1/models/cvae_fashion_mnist   # a running server

Starts `python -m tools.serve --port=0` on 127.0.0.1 (or uses --url, a server of the
same model), then --clients threads (stdlib http.client, one keep-alive connection
each) send --requests requests, `sample` and `log_prob` in equal parts, half of them
in row format and half columnar, with --bad_fraction of bad ones among them. Bounded:
no request starts after --time_limit seconds (the ones left count as failures).

Checked, every answer:
* `sample` (num_samples = --num_samples): HTTP 200, images [n, H, W, C] in [0, 1],
  z [n, D], all finite (sampling is random: shape and range are what can be known);
* `log_prob` (a batch of --batch images, k = --log_prob_samples): HTTP 200 and, per
  image, the SavedModel's own answer for the same images and k, called here. The
  estimate is random (z ~ q(z|x) on every call), so "the same" is: within --tolerance
  standard deviations of the mean of --reference_calls direct calls, and, over all
  answers, a mean signed distance within --bias_tolerance (a wrong k shifts every
  answer; another image's answer is tens of nats away, the spread 1-3 nats for the
  shipped MNIST model at k = 100, with a heavy upper tail: 6.4 sd was the largest
  of 4,480 draws);
* a bad request: HTTP 400 and {"error": <one line>}: for the kinds the SavedModel
  checks (wrong shape, NaN, a count of 0 or 10**7, a label out of range) exactly its
  line (`tf_serving.saved_model_error` of a direct call); for the others
  (malformed JSON, unknown signature, missing input) the server's own line;
* the server: the same process before and after (no restart), still answering.

Test images: --images (a .npy of images in [0, 1]) or, by default, binary images drawn
from the model, x ~ p(x|z) (no dataset needed). Prints one line per figure: requests/s,
p50/p99 latency overall and per kind, counts; status 1 if anything failed.
"""

import http.client
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.parse

import numpy as np
from absl import app, flags

from tfvae import checks, cli, user_files
from tools import common, tf_serving

PROGRAM = "tools.load_test"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)
flags.DEFINE_string("model_dir", None, "Model folder <model_dir>/<version>/ (or a shipped "
                    "model's name): the server's model, and the reference answers'.")
flags.DEFINE_string("url", None, "A running server's model URL, http://HOST:PORT/v1/"
                    "models/NAME; default: start tools.serve on 127.0.0.1.")
cli.count_flag("requests", 2000, "Requests in all.")
cli.count_flag("clients", 8, "Concurrent clients (threads).")
flags.DEFINE_float("bad_fraction", 0.05, "Fraction of bad requests.", lower_bound=0,
                   upper_bound=1)
cli.count_flag("num_samples", 16, "Samples per `sample` request.",
               maximum=checks.MAX_SAMPLES)
cli.count_flag("batch", 4, "Images per `log_prob` request.")
cli.count_flag("log_prob_samples", 100, "k of each `log_prob` request.")
cli.count_flag("reference_calls", 30, "Direct SavedModel calls per distinct "
               "log_prob request, for the reference mean and spread.")
cli.count_flag("distinct", 16, "Distinct log_prob requests (batches of images).")
flags.DEFINE_float("tolerance", 12.0, "log_prob: allowed distance from the reference "
                   "mean, in its standard deviations.", lower_bound=0)
flags.DEFINE_float("bias_tolerance", 0.5, "log_prob: allowed mean signed distance from "
                   "the reference means over all answers, in standard deviations.",
                   lower_bound=0)
flags.DEFINE_float("time_limit", 600.0, "Seconds after which no request starts.",
                   lower_bound=1)
flags.DEFINE_float("start_timeout", 300.0, "Seconds to wait for the server to start.",
                   lower_bound=1)
flags.DEFINE_string("images", None, "A .npy of test images [N, H, W, C] in [0, 1].")
flags.DEFINE_integer("seed", 0, "Seed of the request mix and the images.")
flags.mark_flag_as_required("model_dir")

# The bad requests: kind -> (signature, inputs or raw body, what checks it).
SAVED_MODEL = "the SavedModel's line"


# -- the server -------------------------------------------------------------------------

def start_server(model_dir, timeout, log_path):
    """(process, model URL) of `python -m tools.serve` on a free loopback port."""
    log = open(log_path, "w", encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.serve", f"--model_dir={model_dir}", "--port=0"],
        stdout=subprocess.PIPE, stderr=log, text=True, cwd=os.path.dirname(
            os.path.dirname(os.path.abspath(__file__))))
    deadline = time.monotonic() + timeout
    line = read_line(process.stdout, deadline)
    if " on http://" not in line:
        process.kill()
        raise checks.InputError(f"the server did not start (its log: {log_path}): "
                                f"{line.strip() or 'no output'}")
    return process, line.rsplit(" on ", 1)[1].strip()


def read_line(stream, deadline):
    """The next line of `stream`, or '' at its end or after `deadline`."""
    found = []
    reader = threading.Thread(target=lambda: found.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(max(0.0, deadline - time.monotonic()))
    return found[0] if found else ""


def stop_server(process):
    """SIGINT, as Ctrl-C, then the status (130 after a graceful shutdown)."""
    if process.poll() is None:
        process.send_signal(2)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


# -- the requests -----------------------------------------------------------------------

class Model:
    """What the requests need from the SavedModel, and its reference answers."""

    def __init__(self, version_dir):
        import tensorflow as tf  # noqa: PLC0415 -- after the flags are checked

        self.tf = tf
        self.signatures = common.load_saved_model(version_dir).signatures
        self.image_shape = tuple(self.signatures["sample"].structured_outputs[
            "images"].shape[1:])
        self.latent_dim = self.signatures["decode"].structured_input_signature[1][
            "z"].shape[-1]
        self.num_classes = (self._num_classes(version_dir) if "labels" in
                            self.signatures["sample"].structured_input_signature[1] else 0)

    @staticmethod
    def _num_classes(version_dir):
        from tfvae import rundir  # noqa: PLC0415

        return int(rundir.read_json(os.path.join(version_dir, rundir.METADATA_FILE),
                                    {}).get("num_classes") or 0)

    def call(self, key, **inputs):
        return self.signatures[key](**{k: self.tf.constant(v) for k, v in inputs.items()})

    def labels(self, count, rng):
        return {"labels": rng.integers(0, self.num_classes, count).astype(np.int32)} \
            if self.num_classes else {}

    def test_images(self, count, rng):
        """--images, or binary images drawn from the model, x ~ p(x|z), z ~ p(z) (for
        a Bernoulli model; a Gaussian model's means stay as they are)."""
        if FLAGS.images:
            images = checks.as_images(user_files.load_npy(FLAGS.images), self.image_shape,
                                      FLAGS.images)
            return images[rng.permutation(len(images))[:count]]
        out = self.call("sample", num_samples=np.int32(count), **self.labels(count, rng))
        means = out["images"].numpy()
        if "logits" not in self.signatures["decode"].structured_outputs:
            return means
        return (rng.random(means.shape) < means).astype(np.float32)

    def log_prob_reference(self, inputs, calls):
        """(mean, standard deviation) per image of `calls` direct log_prob answers."""
        draws = np.stack([self.call("log_prob", **inputs)["log_prob"].numpy()
                          for _ in range(calls)])
        return draws.mean(0), draws.std(0, ddof=1)

    def refusal(self, key, inputs):
        """The SavedModel's one line for bad `inputs` (AssertionError if it takes them)."""
        try:
            self.call(key, **inputs)
        except self.tf.errors.InvalidArgumentError as error:
            return tf_serving.saved_model_error(error.message)
        raise AssertionError(f"the SavedModel took the bad inputs of {key}")


def body(key, inputs, row_format):
    """The JSON of a predict request (NaN written as NaN, as TF Serving reads it)."""
    lists = {name: np.asarray(value).tolist() for name, value in inputs.items()}
    if not row_format:
        return json.dumps({"signature_name": key, "inputs": lists})
    rows = max((len(v) for v in lists.values() if isinstance(v, list)), default=1)
    instances = [{name: value[i] if isinstance(value, list) else value
                  for name, value in lists.items()} for i in range(rows)]
    return json.dumps({"signature_name": key, "instances": instances})


def bad_requests(model, images, rng):
    """[(kind, body, expected line or None)], one of each kind of bad request."""
    labels = model.labels(len(images), rng)
    wrong = np.zeros((2, *model.image_shape[:-1], model.image_shape[-1] + 2), np.float32)
    nan = images.copy()
    nan[0, 0, 0, 0] = np.nan
    cases = {
        "wrong_shape": ("log_prob", {"images": wrong, "num_samples": np.int32(4),
                                     **model.labels(2, rng)}),
        "nan_pixel": ("log_prob", {"images": nan, "num_samples": np.int32(4), **labels}),
        "count_0": ("sample", {"num_samples": np.int32(0), **model.labels(1, rng)}),
        "count_10**7": ("sample", {"num_samples": np.int32(10**7), **model.labels(1, rng)}),
    }
    if model.num_classes:
        cases["label_out_of_range"] = ("sample", {"num_samples": np.int32(2), "labels":
                                                  np.array([model.num_classes], np.int32)})
    requests = [(kind, body(key, inputs, False), model.refusal(key, inputs))
                for kind, (key, inputs) in cases.items()]
    return requests + [
        ("malformed_json", '{"signature_name": "sample", "inputs": {"num_samples": 4',
         "the request body is not JSON"),
        ("unknown_signature", body("generate", {"num_samples": 4}, False),
         "Unknown signature_name 'generate'"),
        ("missing_input", body("log_prob", {"images": images, **labels}, False),
         "num_samples missing")]


def request_plan(model, rng):
    """[(kind, body, check)] of --requests requests in random order."""
    count, bad = FLAGS.requests, round(FLAGS.requests * FLAGS.bad_fraction)
    images = model.test_images(FLAGS.distinct * FLAGS.batch, rng)
    good = []
    for index in range(FLAGS.distinct):
        inputs = {"images": images[index * FLAGS.batch:(index + 1) * FLAGS.batch],
                  "num_samples": np.int32(FLAGS.log_prob_samples),
                  **model.labels(FLAGS.batch, rng)}
        reference = model.log_prob_reference(inputs, FLAGS.reference_calls)
        good.append(("log_prob", inputs, reference))
    samples = {"num_samples": np.int32(FLAGS.num_samples),
               **model.labels(FLAGS.num_samples, rng)}
    bads = bad_requests(model, images[:FLAGS.batch], rng)
    plan = [(kind, text, expected) for kind, text, expected in
            itertools.islice(itertools.cycle(bads), bad)]
    for index in range(count - bad):
        row_format = bool(index // 2 % 2)
        if index % 2:
            plan.append(("sample", body("sample", samples, row_format), None))
        else:
            _, inputs, reference = good[index // 2 % len(good)]
            plan.append(("log_prob", body("log_prob", inputs, row_format), reference))
    return [plan[i] for i in rng.permutation(len(plan))]


# -- the checks of the answers ----------------------------------------------------------

def check_answer(kind, status, answer, expected, model):
    """(None if the answer is right, else what is wrong in one line; for log_prob,
    the signed distances from the reference means in standard deviations)."""
    failure, distances = _check(kind, status, answer, expected, model), None
    if kind == "log_prob" and status == 200:
        mean, spread = expected
        got = np.asarray(outputs_of(answer)["log_prob"], np.float32)
        if got.shape == mean.shape:
            distances = (got - mean) / np.maximum(spread, 1e-4)
    return failure, distances


def _check(kind, status, answer, expected, model):
    if kind not in ("sample", "log_prob"):
        error = answer.get("error", "") if isinstance(answer, dict) else ""
        if status != 400 or "\n" in error or not error:
            return f"{kind}: HTTP {status}, {str(answer)[:200]}"
        if expected not in error or (expected.startswith("assertion") and error != expected):
            return f"{kind}: {error!r} instead of {expected!r}"
        return None
    if status != 200:
        return f"{kind}: HTTP {status}, {str(answer)[:200]}"
    outputs = outputs_of(answer)
    if kind == "sample":
        images = np.asarray(outputs["images"], np.float32)
        z = np.asarray(outputs["z"], np.float32)
        n = FLAGS.num_samples
        if images.shape != (n, *model.image_shape) or z.shape != (n, model.latent_dim):
            return f"sample: shapes {images.shape}, {z.shape}"
        if not (np.isfinite(z).all() and images.min() >= 0 and images.max() <= 1):
            return "sample: values outside [0, 1] or not finite"
        return None
    got = np.asarray(outputs["log_prob"], np.float32)
    mean, spread = expected
    allowed = FLAGS.tolerance * np.maximum(spread, 1e-4)
    if got.shape != mean.shape or not np.all(np.abs(got - mean) <= allowed):
        return f"log_prob: {got.tolist()} against the SavedModel's {mean.tolist()} " \
               f"+- {allowed.tolist()}"
    return None


def outputs_of(answer):
    """{output: value} of a columnar or row-format answer."""
    if "outputs" in answer:
        outputs = answer["outputs"]
        return outputs if isinstance(outputs, dict) else {"log_prob": outputs}
    rows = answer["predictions"]
    if rows and isinstance(rows[0], dict):
        return {name: [row[name] for row in rows] for name in rows[0]}
    return {"log_prob": rows}


# -- the clients ------------------------------------------------------------------------

def client(url, work, results, deadline, model):
    """Sends requests from `work` on one keep-alive connection until it is empty."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    path = f"{parts.path}:predict"
    while True:
        try:
            kind, text, expected = work.get_nowait()
        except queue.Empty:
            break
        if time.monotonic() > deadline:
            results.append((kind, None, "not sent: the time limit was reached", None))
            continue
        start = time.perf_counter()
        try:
            connection.request("POST", path, text.encode(),
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            status, raw = response.status, response.read()
        except (OSError, http.client.HTTPException) as error:
            connection.close()
            results.append((kind, None, f"{kind}: {checks.first_line(error)}", None))
            continue
        latency = time.perf_counter() - start
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = raw[:200]
        results.append((kind, latency, *check_answer(kind, status, answer, expected,
                                                      model)))
    connection.close()


def run_clients(url, plan, model):
    """[(kind, latency or None, failure or None, log_prob distances or None)] and the
    wall time."""
    work = queue.Queue()
    for item in plan:
        work.put(item)
    results = []
    deadline = time.monotonic() + FLAGS.time_limit
    threads = [threading.Thread(target=client, args=(url, work, results, deadline, model))
               for _ in range(FLAGS.clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def report(results, seconds):
    """The figures, one line each; the number of failures."""
    failures = [failure for _, _, failure, _ in results if failure]
    latencies = {kind: [t for k, t, _, _ in results if k == kind and t is not None]
                 for kind in ("sample", "log_prob")}
    latencies["bad"] = [t for k, t, _, _ in results if k not in latencies and t is not None]
    distances = [d for _, _, _, d in results if d is not None]
    answered = sum(len(v) for v in latencies.values())
    every = np.concatenate([v for v in latencies.values() if v]) * 1e3
    print(f"requests: {len(results)} ({len(latencies['sample'])} sample, "
          f"{len(latencies['log_prob'])} log_prob, {len(latencies['bad'])} bad) by "
          f"{FLAGS.clients} clients in {seconds:.1f} s")
    print(f"requests/s: {answered / seconds:.1f}")
    print(f"latency p50: {np.percentile(every, 50):.1f} ms")
    print(f"latency p99: {np.percentile(every, 99):.1f} ms")
    for kind, values in latencies.items():
        if values:
            values = np.asarray(values) * 1e3
            print(f"latency {kind} p50 / p99: {np.percentile(values, 50):.1f} / "
                  f"{np.percentile(values, 99):.1f} ms")
    if distances:
        distances = np.concatenate(distances)
        bias = float(distances.mean())
        print(f"log_prob distance from the SavedModel's mean: mean {bias:+.3f} sd (allowed "
              f"+-{FLAGS.bias_tolerance}), largest {np.abs(distances).max():.2f} sd "
              f"(allowed {FLAGS.tolerance:g})")
        if abs(bias) > FLAGS.bias_tolerance:
            failures.append(f"log_prob: the answers are {bias:+.3f} sd off the "
                            "SavedModel's on average")
    print(f"failures: {len(failures)}")
    for failure in failures[:10]:
        print(f"  {failure}")
    return len(failures)


@cli.interruptible(PROGRAM, "the server it started was stopped; nothing was written.")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    try:
        model_dir, version_dir = tf_serving.newest_version(FLAGS.model_dir)
        model = Model(version_dir)
        rng = np.random.default_rng(FLAGS.seed)
        plan = request_plan(model, rng)
    except (ValueError, OSError) as error:  # InputError too
        cli.fail(PROGRAM, error)
    process, url = None, FLAGS.url
    try:
        if url is None:
            log_path = os.path.join(os.environ.get("TMPDIR", "/tmp"),
                                    f"tools_serve_{os.getpid()}.log")
            process, url = start_server(model_dir, FLAGS.start_timeout, log_path)
            print(f"server: {url} (pid {process.pid}, log {log_path})", flush=True)
        print(f"model: {version_dir}; log_prob k={FLAGS.log_prob_samples} on "
              f"{FLAGS.batch} images, sample n={FLAGS.num_samples}", flush=True)
        results, seconds = run_clients(url, plan, model)
        failures = report(results, seconds)
        restarted = process is not None and process.poll() is not None
        status = urllib_status(url)
        print(f"server after the run: {'exited' if restarted else 'same process'}, "
              f"status {status}")
        failures += restarted or status != 200
    except checks.InputError as error:
        cli.fail(PROGRAM, error)
    finally:
        if process is not None:
            stop_server(process)
    if failures:
        sys.exit(1)


def urllib_status(url):
    """HTTP status of GET `url` (the model's status route), None if unreachable."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        connection.request("GET", parts.path)
        return connection.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        connection.close()


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
