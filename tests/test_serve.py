"""Tests of tools.serve: TF Serving's REST protocol through KServe, answered as the
SavedModel answers, bad requests refused in one line, bound where told.

The server tests run `python -m tools.serve` on tiny exports and skip when KServe is
not installed (the `serve` extra: pip install -e ".[test,serve]", as .ci/run does).
The protocol (`tools.tf_serving`) and the command line's own checks need no KServe.
"""

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae import checks, export
from tools import serve, tf_serving

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
IMAGE_SHAPE = (8, 8, 1)
LATENT_DIM = 3
CLASSES = 3
NO_KSERVE = ("KServe is not installed: tools.serve needs the serve extra "
             "(pip install -e \".[test,serve]\")")


def binary_images(count, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random((count, *IMAGE_SHAPE)) < 0.3).astype(np.float32)


# -- the exports and their servers ----------------------------------------------------

@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """{"conditional": version folder, "flat": version folder} of two tiny exports.

    "flat" has q(z|x) = p(z) = N(0, I) exactly and a decoder that ignores z, so every
    importance weight is p(x|z) for any z: its log_prob and elbo, random draws
    elsewhere, are the same float on every call, which lets the server's answer be
    compared with the SavedModel's to the last bit.
    """
    base = tmp_path_factory.mktemp("saved_models")
    keras.utils.set_random_seed(5)
    conditional = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (16,), context_dim=CLASSES),
                            tfvae.MLPDecoder(IMAGE_SHAPE, (16,)), num_classes=CLASSES,
                            context_dropout=0.1)  # it has sample_guided
    flat = tfvae.VAE(tfvae.MLPEncoder(LATENT_DIM, (4,)), tfvae.MLPDecoder(IMAGE_SHAPE, (4,)))
    head, out = flat.encoder.head.params, flat.decoder.out
    head.kernel.assign(tf.zeros_like(head.kernel))
    out.kernel.assign(tf.zeros_like(out.kernel))
    out.bias.assign(np.random.default_rng(6).normal(size=out.bias.shape).astype("float32"))
    raw = np.float32(np.log(np.expm1(1.0 - 1e-4)))  # softplus(raw) + min_scale = 1
    for _ in range(64):  # the float32 raw scale whose scale is exactly 1
        head.bias.assign(np.array([0.0] * LATENT_DIM + [raw] * LATENT_DIM, np.float32))
        scale = flat.encode(binary_images(1)).distribution.scale.numpy()
        if np.all(scale == 1.0):
            break
        raw = np.nextafter(raw, np.float32(-np.inf if scale[0, 0] > 1 else np.inf))
    assert np.all(scale == 1.0)
    return {name: export.export_model(model, str(base), name=name, tflite=(),
                                      with_keras=False)["saved_model"]
            for name, model in (("conditional", conditional), ("flat", flat))}


class Server:
    """`python -m tools.serve` on a free port, its URL once it serves."""

    def __init__(self, model_dir, *flags, log_dir):
        pytest.importorskip("kserve", reason=NO_KSERVE)
        self.log = open(os.path.join(log_dir, "server.log"), "w+", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tools.serve", f"--model_dir={model_dir}", "--port=0",
             *flags], cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=self.log,
            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        ready, _, _ = select.select([self.process.stdout], [], [], 300)
        line = self.process.stdout.readline() if ready else ""
        assert " on http://" in line, (line, self.stderr())
        self.url = line.rsplit(" on ", 1)[1].strip()
        self.port = int(self.url.split(":")[2].split("/")[0])

    def stderr(self):
        self.log.seek(0)
        return self.log.read()[-3000:]

    def predict(self, request):
        """(HTTP status, JSON answer) of a predict request (a dict, or raw text)."""
        data = request if isinstance(request, str) else json.dumps(request)
        return http(f"{self.url}:predict", data.encode())

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.log.close()


def http(url, data=None):
    """(status, JSON answer) of GET (or POST `data` to) `url`."""
    try:
        with urllib.request.urlopen(url, data, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def serving(model_dir, tmp_path_factory, *flags):
    server = Server(model_dir, *flags, log_dir=tmp_path_factory.mktemp("server"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def conditional(exports, tmp_path_factory):
    yield from serving(os.path.dirname(exports["conditional"]), tmp_path_factory)


@pytest.fixture(scope="module")
def flat(exports, tmp_path_factory):
    yield from serving(os.path.dirname(exports["flat"]), tmp_path_factory)


def signatures(version_dir):
    return tf.saved_model.load(version_dir).signatures


def direct(function, **inputs):
    return {k: v.numpy() for k, v in function(**{n: tf.constant(v) for n, v in
                                                  inputs.items()}).items()}


def columnar(key, **inputs):
    return {"signature_name": key,
            "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()}}


def rows(key, count, **inputs):
    """Row format: arrays split by row, scalars repeated in every row."""
    return {"signature_name": key, "instances": [
        {k: (np.asarray(v)[i].tolist() if np.ndim(v) else np.asarray(v).item())
         for k, v in inputs.items()} for i in range(count)]}


def assert_bitwise(answer, expected):
    """The JSON floats, read as float32, are the SavedModel's to the last bit."""
    assert set(answer) == set(expected)
    for name, value in expected.items():
        got = np.asarray(answer[name], value.dtype)
        assert got.shape == value.shape, name
        np.testing.assert_array_equal(got, value, err_msg=name)


def by_row(predictions):
    """Row-format predictions as {output: array}."""
    return {name: np.asarray([row[name] for row in predictions]) for name in predictions[0]}


# -- the contract's signatures, as the SavedModel answers them ---------------------------

def test_encode_decode_reconstruct_answer_as_the_saved_model_to_the_last_float(
        exports, conditional):
    saved = signatures(exports["conditional"])
    images, labels = binary_images(5, seed=1), np.array([0, 1, 2, 1, 0], np.int32)
    z = np.random.default_rng(2).normal(size=(5, LATENT_DIM)).astype(np.float32)
    for key, inputs in (("encode", dict(images=images, labels=labels)),
                        ("decode", dict(z=z, labels=labels)),
                        ("reconstruct", dict(images=images, labels=labels))):
        expected = direct(saved[key], **inputs)
        status, answer = conditional.predict(columnar(key, **inputs))
        assert status == 200, answer
        assert_bitwise(answer["outputs"] if len(expected) > 1
                       else {name: answer["outputs"] for name in expected}, expected)
        status, answer = conditional.predict(rows(key, 5, **inputs))
        assert status == 200, answer
        predictions = answer["predictions"]
        assert_bitwise(by_row(predictions) if len(expected) > 1
                       else {name: predictions for name in expected}, expected)


def test_log_prob_and_elbo_answer_as_the_saved_model_to_the_last_float(exports, flat):
    saved = signatures(exports["flat"])
    images = binary_images(4, seed=3)
    for key, inputs in (("log_prob", dict(images=images, num_samples=np.int32(7))),
                        ("elbo", dict(images=images))):
        expected = direct(saved[key], **inputs)
        assert_bitwise(direct(saved[key], **inputs), expected)  # deterministic here
        status, answer = flat.predict(columnar(key, **inputs))
        assert status == 200, answer
        outputs = answer["outputs"]
        assert_bitwise(outputs if isinstance(outputs, dict) else {key: outputs}, expected)
        status, answer = flat.predict(rows(key, 4, **inputs))
        predictions = answer["predictions"]
        assert_bitwise(by_row(predictions) if isinstance(predictions[0], dict)
                       else {key: predictions}, expected)
    assert set(expected) == {"elbo", "distortion", "rate"}


def test_sample_answers_the_asked_number_of_rows(conditional, flat):
    status, answer = flat.predict({"inputs": {"num_samples": 3}})  # serving_default
    assert status == 200
    assert np.asarray(answer["outputs"]["images"]).shape == (3, *IMAGE_SHAPE)
    assert np.asarray(answer["outputs"]["z"]).shape == (3, LATENT_DIM)
    status, answer = flat.predict({"signature_name": "sample",
                                   "instances": [{"num_samples": 2}]})
    assert status == 200 and len(answer["predictions"]) == 2
    status, answer = conditional.predict(rows("sample", 2, num_samples=np.int32(2),
                                              labels=np.array([0, 2], np.int32)))
    images = by_row(answer["predictions"])["images"]
    assert status == 200 and images.shape == (2, *IMAGE_SHAPE)
    assert np.all((images >= 0) & (images <= 1))
    status, answer = conditional.predict(columnar(
        "sample_at_temperature", num_samples=np.int32(2), labels=np.array([1], np.int32),
        temperature=np.array([1e-6], np.float32)))
    images = np.asarray(answer["outputs"]["images"])
    assert status == 200 and images.shape == (2, *IMAGE_SHAPE)
    np.testing.assert_allclose(images[0], images[1], atol=1e-5)  # p(z|y)'s mean, twice
    status, answer = conditional.predict(columnar(
        "sample_guided", num_samples=np.int32(2), labels=np.array([1], np.int32),
        temperature=np.array([1e-6], np.float32), guidance=np.float32(2.0),
        image_guidance=np.float32(0.0)))
    guided = np.asarray(answer["outputs"]["images"])
    assert status == 200 and guided.shape == (2, *IMAGE_SHAPE)
    np.testing.assert_allclose(guided, images, atol=1e-5)  # N(0, I) on top: no lean


def test_status_and_metadata_follow_tf_serving(conditional):
    status, answer = http(conditional.url)
    assert status == 200 and answer["ready"] is True
    assert answer["model_version_status"] == [{
        "version": "1", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]
    status, answer = http(f"{conditional.url}/metadata")
    definitions = answer["metadata"]["signature_def"]["signature_def"]
    assert status == 200 and answer["model_spec"]["version"] == "1"
    assert {"serving_default", "sample", "encode", "decode", "reconstruct", "log_prob",
            "elbo"} <= set(definitions)
    assert set(definitions["log_prob"]["inputs"]) == {"images", "num_samples", "labels"}
    assert definitions["decode"]["inputs"]["z"]["tensor_shape"]["dim"] == [
        {"size": "-1"}, {"size": str(LATENT_DIM)}]
    assert http(conditional.url.replace("/conditional", "/other"))[0] == 404


# -- bad requests ------------------------------------------------------------------------

GOOD = columnar("sample", num_samples=np.int32(2), labels=np.array([1], np.int32))
NAN = binary_images(2)
NAN[1, 3, 3, 0] = np.nan
TWO = np.array([0, 1], np.int32)
# (request, the inputs the SavedModel refuses, or the server's own words)
BAD = {
    "malformed_json": ('{"signature_name": "sample", "inputs": {"num_samples": 2',
                       "the request body is not JSON"),
    "not_an_object": ("[1, 2]", "the request is a JSON list, not an object"),
    "unknown_signature": (columnar("generate", num_samples=2),
                          "Unknown signature_name 'generate'"),
    "missing_input": (columnar("log_prob", images=binary_images(2), labels=TWO),
                      "num_samples missing"),
    "unknown_input": ({"signature_name": "decode", "inputs": {
        "z": [[0.0] * LATENT_DIM], "label": [0]}}, "unknown input 'label'"),
    "both_formats": ({**GOOD, "instances": [{"num_samples": 2}]},
                     "has both 'instances' and 'inputs'; give one"),
    "fractional_count": (columnar("sample", num_samples=2.5, labels=[1]),
                         "num_samples must hold integers (int32); got 2.5"),
    "count_as_list": (columnar("sample", num_samples=[2], labels=[1]),
                      "num_samples is a scalar"),
    "string_pixels": ({"signature_name": "encode", "inputs": {
        "images": "zeros", "labels": [0]}}, "images must hold numbers"),
    "ragged_codes": ({"signature_name": "decode", "inputs": {
        "z": [[0.0, 0.0, 0.0], [0.0]], "labels": [0, 0]}}, "z is a ragged list"),
    "label_overflow": (columnar("sample", num_samples=1, labels=[2**40]),
                       "labels must hold int32 integers"),
    "rows_disagree": ({"signature_name": "log_prob", "instances": [
        {"images": binary_images(1)[0].tolist(), "num_samples": k, "labels": 0}
        for k in (2, 3)]}, "give the same value in every row"),
    # refused by the SavedModel's own checks: the answer is its line
    "wrong_shape": ("encode", dict(images=np.zeros((2, 7, 8, 1), np.float32), labels=TWO)),
    "nan_pixel": ("log_prob", dict(images=NAN, num_samples=np.int32(3), labels=TWO)),
    "nan_code": ("decode", dict(z=np.full((1, LATENT_DIM), np.nan, np.float32),
                                labels=TWO[:1])),
    "count_0": ("sample", dict(num_samples=np.int32(0), labels=TWO[:1])),
    "count_10**7": ("sample", dict(num_samples=np.int32(10**7), labels=TWO[:1])),
    "label_out_of_range": ("sample", dict(num_samples=np.int32(2),
                                          labels=np.array([CLASSES], np.int32))),
    "temperature_0": ("sample_at_temperature", dict(
        num_samples=np.int32(2), temperature=np.zeros([1], np.float32), labels=TWO[:1])),
    "guidance_-1": ("sample_guided", dict(
        num_samples=np.int32(2), temperature=np.ones([1], np.float32),
        guidance=np.float32(-1.0), image_guidance=np.float32(0.0), labels=TWO[:1])),
    "labels_for_other_rows": ("elbo", dict(images=binary_images(2),
                                           labels=np.array([0, 1, 2], np.int32))),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_request_gets_400_in_one_line_and_the_server_goes_on(
        case, exports, conditional):
    first, second = BAD[case]
    if isinstance(second, dict):  # the SavedModel's own check: the same line
        try:
            direct(signatures(exports["conditional"])[first], **second)
        except tf.errors.InvalidArgumentError as error:
            expected = tf_serving.saved_model_error(error.message)
        else:
            pytest.fail("the SavedModel took the inputs")
        assert expected.startswith("assertion failed: [")
        request = columnar(first, **second)
    else:
        request, expected = first, second
    status, answer = conditional.predict(request)
    assert status == 400, answer
    assert set(answer) == {"error"} and "\n" not in answer["error"]
    assert expected == answer["error"] if isinstance(second, dict) \
        else expected in answer["error"]
    status, answer = conditional.predict(GOOD)
    assert status == 200 and len(answer["outputs"]["images"]) == 2
    assert conditional.process.poll() is None


def test_curl_style_bodies_and_nan_literals_are_read_as_tf_serving_reads_them(flat):
    """curl -d sends application/x-www-form-urlencoded; NaN is a JSON number to TF
    Serving (rapidjson's kParseNanAndInfFlag), so the SavedModel's check answers."""
    request = urllib.request.Request(
        f"{flat.url}:predict", b'{"inputs": {"num_samples": 2}}',
        {"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=60) as response:
        assert len(json.loads(response.read())["outputs"]["z"]) == 2
    status, answer = flat.predict('{"signature_name": "decode", "inputs": {"z": '
                                  '[[NaN, 0, Infinity]]}}')
    assert (status, answer) == (400, {"error": "assertion failed: [z must be finite "
                                               "numbers; found NaN or Inf]"})


# -- where it binds, how it stops ---------------------------------------------------------

def listening_addresses(port):
    """The local addresses of the TCP sockets listening on `port` (/proc/net/tcp)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        with open(table, encoding="ascii") as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    found.append(address)
    return found


def refused(host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def other_address():
    """An address of this machine that is not loopback, or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("10.255.255.255", 1))  # no packet is sent
            address = probe.getsockname()[0]
    except OSError:
        return None
    return None if address.startswith("127.") else address


def test_by_default_only_loopback_is_served(conditional):
    if not os.path.exists("/proc/net/tcp"):
        pytest.skip("no /proc/net/tcp to read the listening sockets from")
    assert listening_addresses(conditional.port) == ["0100007F"]  # 127.0.0.1, only
    address = other_address()
    if address:
        assert refused(address, conditional.port)


def test_the_given_host_is_bound_and_ctrl_c_shuts_down_in_one_line(exports, tmp_path):
    server = Server(os.path.dirname(exports["flat"]), "--host=127.0.0.2",
                    "--model_name=tiny", log_dir=tmp_path)
    try:
        assert server.url.startswith("http://127.0.0.2:") and server.url.endswith("/tiny")
        assert http(server.url)[0] == 200
        assert refused("127.0.0.1", server.port)
        server.process.send_signal(signal.SIGINT)
        server.process.wait(60)
    finally:
        server.stop()
    assert server.process.returncode == 130
    with open(tmp_path / "server.log", encoding="utf-8") as f:
        text = f.read()
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        "tools.serve: interrupted; the server has shut down (it writes no files).")


# -- the command line's checks (no KServe needed) ---------------------------------------

def test_the_newest_version_is_served_and_bad_model_folders_are_named(tmp_path, exports):
    model_dir = os.path.dirname(exports["flat"])
    assert tf_serving.newest_version(model_dir) == (model_dir, exports["flat"])
    os.makedirs(tmp_path / "m" / "7")
    (tmp_path / "m" / "12").mkdir()  # 12 > 7: the newest, but no SavedModel
    (tmp_path / "empty").mkdir()
    for path, words in ((tmp_path / "m", "m/12, the newest version in"),
                        (tmp_path / "empty", "holds no integer version folder"),
                        (exports["flat"], "is a version folder; give the folder above"),
                        (tmp_path / "missing", "is not a folder, nor a shipped model")):
        with pytest.raises(checks.InputError, match=words):
            tf_serving.newest_version(str(path))
    shipped = tf_serving.newest_version("vae_binarized_mnist")[1]
    assert os.path.basename(shipped) == "2" and "vae_binarized_mnist" in shipped


def test_bind_listens_where_told_and_names_what_stops_it():
    with serve.bind("127.0.0.2", 0) as sock:
        host, port = sock.getsockname()
        assert host == "127.0.0.2"
        with pytest.raises(checks.InputError, match=f"port {port} is in use on 127.0.0.2"):
            serve.bind("127.0.0.2", port)
    for host, words in (("", "--host is empty"),
                        ("192.0.2.1", "192.0.2.1 is not an address of this machine")):
        with pytest.raises(checks.InputError, match=words):
            serve.bind(host, 0)
    with pytest.raises(checks.InputError, match="cannot stand in a URL"):
        serve.model_name("m", "my model")


@pytest.mark.parametrize("flags,words", [
    ((), "Flag --model_dir must have a value other than None"),
    (("--model_dir=/nonexistent/model",), "--model_dir /nonexistent/model is not a folder"),
])
def test_the_command_line_fails_in_one_line(flags, words):
    result = subprocess.run([sys.executable, "-m", "tools.serve", *flags], cwd=REPO,
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("tools.serve: error: ") and words in line, result.stderr


def test_a_port_in_use_is_named_in_one_line(exports):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tools.serve", f"--model_dir={exports['flat']}/..",
             f"--port={port}"], cwd=REPO, env=ENV, capture_output=True, text=True,
            timeout=120)
    assert result.returncode == 1 and result.stderr.strip().splitlines()[-1] == (
        f"tools.serve: error: cannot listen on 127.0.0.1:{port}: port {port} is in use "
        "on 127.0.0.1: stop what holds it or pick another --port (0: any free one).")


# -- the protocol, in numpy ---------------------------------------------------------------

SPECS = {"log_prob": {"images": ((None, 2), np.float32), "num_samples": ((), np.int32)},
         "sample": {"num_samples": ((), np.int32)}}


def test_row_and_columnar_requests_give_the_same_inputs():
    images = [[0.0, 1.0], [1.0, 0.5]]
    row = {"signature_name": "log_prob", "instances": [
        {"images": images[0], "num_samples": 5}, {"images": images[1], "num_samples": 5}]}
    key, inputs, row_format = tf_serving.parse_request(row, SPECS)
    assert (key, row_format) == ("log_prob", True)
    np.testing.assert_array_equal(inputs["images"], np.float32(images))
    assert inputs["num_samples"].shape == () and inputs["num_samples"] == 5
    assert inputs["num_samples"].dtype == np.int32
    _, columns, row_format = tf_serving.parse_request(
        {"signature_name": "log_prob", "inputs": {"images": images, "num_samples": 5}},
        SPECS)
    assert not row_format
    np.testing.assert_array_equal(columns["images"], inputs["images"])
    # no signature_name: serving_default; a plain value for a one-input signature
    specs = {"serving_default": SPECS["sample"]}
    assert tf_serving.parse_request({"instances": [4]}, specs)[1]["num_samples"] == 4
    assert tf_serving.parse_request({"inputs": 4}, specs)[1]["num_samples"] == 4


def test_answers_take_tf_servings_shapes():
    log_prob = {"log_prob": np.float32([-1.5, -2.25])}
    assert tf_serving.response(log_prob, row_format=True)["predictions"] is \
        log_prob["log_prob"]
    assert tf_serving.response(log_prob, row_format=False)["outputs"] is \
        log_prob["log_prob"]
    sample = {"z": np.float32([[1.0], [2.0]]), "images": np.float32([[0.5], [0.25]])}
    rows_answer = tf_serving.response(sample, row_format=True)["predictions"]
    assert [sorted(r) for r in rows_answer] == [["images", "z"]] * 2
    assert rows_answer[1]["z"] == 2.0
    assert set(tf_serving.response(sample, row_format=False)["outputs"]) == {"images", "z"}


def test_the_saved_models_line_is_its_failed_assertion():
    message = ("Graph execution error:\n\nDetected at node cond/Assert/Assert defined at "
               "(most recent call last):\n<stack traces unavailable>\nassertion failed: "
               "[num_samples must be a positive integer (at most 10000), as an int32 "
               "scalar; got] [0]\n\t [[{{node cond/Assert/Assert}}]] [Op:__inference_1]")
    assert tf_serving.saved_model_error(message) == (
        "assertion failed: [num_samples must be a positive integer (at most 10000), as "
        "an int32 scalar; got] [0]")
    assert tf_serving.saved_model_error(
        "Graph execution error:\n\nThe second input must be a scalar\n\t [[{{node x}}]]"
    ) == "The second input must be a scalar"
