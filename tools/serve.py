r"""Serve an exported model over TF Serving's REST protocol, through KServe.

    pip install -e ".[serve]"
    python -m tools.serve --model_dir=saved_models/vae_binarized_mnist --port=8501
    curl -d '{"signature_name": "sample", "inputs": {"num_samples": 2}}' \
        http://127.0.0.1:8501/v1/models/vae_binarized_mnist:predict

--model_dir is a model folder in TF Serving's layout, <model_dir>/<version>/ (or the
name of a shipped model, `tfvae.presets`); its highest integer version is served,
under --model_name (default: the folder's name). Every signature of the SavedModel
answers `POST /v1/models/<name>:predict` with {"signature_name": ..., "instances":
[...]} (row format) or {"inputs": {...}} (columnar), as TF Serving answers it
("predictions" / "outputs"); `sample` (= serving_default), `encode`, `decode`,
`reconstruct`, `log_prob`, `elbo` for a tfvae export, each with `labels` for a
conditional model. Scalars such as num_samples in row format: every row gives the
same value (`tools.tf_serving`). `GET /v1/models/<name>` answers the status (KServe's
"ready" and TF Serving's "model_version_status"), `GET /v1/models/<name>/metadata` the
signatures (`tools.kserve_server`). Not served: TF Serving's
`/versions/<v>` paths, classify and regress, gRPC.

A bad request (malformed JSON, an unknown signature, a missing input, a wrong shape,
NaN, a count of 0 or 10**7, a label out of range, ...) gets HTTP 400 and
{"error": "<one line>"}: the SavedModel's own line when its checks refuse the input
(the line TF Serving returns first too), and the server goes on serving.

It binds 127.0.0.1, this machine only, unless --host names another address
(--host=0.0.0.0: every interface); KServe's own default is 0.0.0.0. --port=0 takes a
free port; the line 'tools.serve: serving ... on http://HOST:PORT/...' names it once
the model is loaded. Ctrl-C shuts down gracefully (uvicorn's shutdown: in-flight
requests are answered), then 'tools.serve: interrupted; ...' and status 130; started
with SIGINT ignored (nohup), 'tools.serve: stopped.' and status 0; SIGTERM shuts down
the same way, then ends the process as SIGTERM does (status 143). A bad --model_dir
(no version folder, not a SavedModel), a port in use, a host that is not this
machine's, or KServe not installed: one line 'tools.serve: error: ...' and status 1.
"""

import errno
import os
import re
import socket
import sys

from absl import app, flags

from tfvae import checks, cli
from tools import tf_serving

PROGRAM = "tools.serve"
LOOPBACK = "127.0.0.1"
FLAGS = flags.FLAGS
parse_flags = cli.flags_parser(PROGRAM)  # a bad flag: one line
flags.DEFINE_string("model_dir", None, "Model folder <model_dir>/<version>/ (TF "
                    "Serving's model_base_path), or a shipped model's name.")
flags.DEFINE_integer("port", 8501, "TCP port (TF Serving's REST port by default; 0: a "
                     "free one, printed).", lower_bound=0, upper_bound=65535)
flags.DEFINE_string("host", LOOPBACK, "Address to bind: 127.0.0.1 serves this machine "
                    "only; give 0.0.0.0 (or an interface's address) to serve others.")
flags.DEFINE_string("model_name", None, "Name in the URLs; default: the model folder's.")
flags.mark_flag_as_required("model_dir")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def model_name(model_dir, given=None):
    """--model_name, or the model folder's name; InputError unless URL-safe."""
    name = given or os.path.basename(os.path.normpath(os.path.abspath(model_dir)))
    if not _NAME.fullmatch(name):
        raise checks.InputError(f"--model_name {name!r} cannot stand in a URL; use "
                                "letters, digits, '_', '.' and '-'.")
    return name


def bind(host, port):
    """A listening TCP socket on (host, port); InputError in one line if it cannot be
    bound. Bound here, not by uvicorn, so that it is exactly where asked."""
    if not host:
        raise checks.InputError(f"--host is empty; give an address ({LOOPBACK}: this "
                                "machine only, 0.0.0.0: every interface).")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        return socket.create_server((host, port), family=family, backlog=128)
    except socket.gaierror as error:
        raise checks.InputError(f"--host {host} is not a known address "
                                f"({error.strerror}).") from None
    except OSError as error:
        reasons = {errno.EADDRINUSE: f"port {port} is in use on {host}: stop what holds "
                                     "it or pick another --port (0: any free one)",
                   errno.EADDRNOTAVAIL: f"{host} is not an address of this machine",
                   errno.EACCES: f"port {port} needs privileges: pick one above 1023"}
        reason = reasons.get(error.errno, error.strerror or str(error))
        raise checks.InputError(f"cannot listen on {host}:{port}: {reason}.") from None


def import_server():
    """`tools.kserve_server`; `kserve.model_server` parses sys.argv for its own flags
    when first imported, so it sees none of ours."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from tools import kserve_server  # noqa: PLC0415 -- TensorFlow and KServe
    except ImportError as error:
        raise checks.InputError(f"KServe is not installed ({checks.first_line(error)}); "
                                "pip install -e \".[serve]\".") from None
    finally:
        sys.argv = argv
    return kserve_server


def url(sock, name):
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}/v1/models/{name}"


@cli.interruptible(PROGRAM, "the server has shut down (it writes no files).")
def main(argv):
    cli.start_tool(PROGRAM, argv)
    try:  # the quick checks first, then the slow imports and the load
        model_dir, version_dir = tf_serving.newest_version(FLAGS.model_dir)
        name = model_name(model_dir, FLAGS.model_name)
        sock = bind(FLAGS.host, FLAGS.port)
        server = import_server()
        model = server.SignatureModel(name, version_dir)
        model.load()
    except checks.InputError as error:
        cli.fail(PROGRAM, error)
    print(f"{PROGRAM}: serving {version_dir} (signatures: "
          f"{', '.join(sorted(model.signatures))}) on {url(sock, name)}", flush=True)
    server.BoundModelServer(sock).start([model])
    print(f"{PROGRAM}: stopped.", flush=True)  # a SIGINT that was ignored (nohup, &)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
