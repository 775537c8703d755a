"""KServe's ModelServer answering TF Serving's REST protocol for one SavedModel.

What KServe's v1 protocol does (kserve 0.21: `protocol/rest/v1_endpoints.py`,
`protocol/dataplane.py`, `model.py`): `POST /v1/models/<name>:predict` parses the body
with orjson (raw bytes pass through when the Content-Type is not JSON's), hands the
value whole to the model's `preprocess`, `validate` (which only checks that an
"instances" key holds a list) and `predict`, and writes what comes back with orjson.
It reads neither `signature_name` nor `instances` / `inputs`; a non-async `predict`
runs on the event loop, one request at a time; any exception but its own
`InvalidInput` (HTTP 400) is a 500; `GET /v1/models/<name>` answers {"name", "ready"}
and v1 has no metadata route. The gaps, filled here:

* `SignatureModel.preprocess` reads the request as TF Serving does
  (`tools.tf_serving`: signature_name, row or columnar format, one-line refusals
  as InvalidInput); `predict` runs the signature in a worker thread and turns the
  SavedModel's InvalidArgumentError (a failed input check) into InvalidInput with
  its one line, so the answer is HTTP 400 {"error": "assertion failed: [...]"}.
* `TFServingDataPlane.decode` parses every v1 body as JSON, whatever its Content-Type
  (`curl -d` sends application/x-www-form-urlencoded), NaN and Infinity included
  (TF Serving reads them; orjson refuses them), malformed JSON a 400.
* `GET /v1/models/<name>` also answers TF Serving's "model_version_status", and
  `GET /v1/models/<name>/metadata` the signatures as TF Serving lists them.
* `BoundModelServer` serves the socket it is given: `ModelServer.start` binds
  0.0.0.0 (KServe's RESTServer hardcodes the host) and opens gRPC on 8081.
* A 400 is logged in one line, not with KServe's traceback.

Import it with `sys.argv` holding only the program: `kserve.model_server` parses
`sys.argv` for its own flags when imported (`tools.serve.import_server`).
"""

import asyncio
import logging
import os
import warnings

import tensorflow as tf
from google.protobuf import json_format
from kserve import Model, ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING, PredictorProtocol
from kserve.errors import InvalidInput, ModelNotFound
from kserve.model_server import app
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.server import RESTServer
from tensorflow.core.protobuf import saved_model_pb2

from tfvae import checks
from tools import common, tf_serving

# KServe 0.21 answers with FastAPI's ORJSONResponse, which FastAPI now calls
# deprecated; orjson is what writes float32 arrays in their shortest form.
warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")


class SignatureModel(Model):
    """Every signature of the SavedModel in `version_dir`, as a KServe model."""

    def __init__(self, name, version_dir):
        super().__init__(name)
        self.version_dir = version_dir
        self.version = os.path.basename(os.path.normpath(version_dir))
        self.signatures, self.specs = {}, {}

    def load(self):
        """Loads the SavedModel; InputError in one line if it cannot be."""
        self.saved_model = common.load_saved_model(self.version_dir)
        self.signatures = dict(self.saved_model.signatures)
        if not self.signatures:
            raise checks.InputError(f"{self.version_dir} has no signatures to serve.")
        self.specs = {key: {name: (None if spec.shape.rank is None else tuple(spec.shape),
                                   spec.dtype.as_numpy_dtype)
                            for name, spec in function.structured_input_signature[1].items()}
                      for key, function in self.signatures.items()}
        self.ready = True
        return self.ready

    async def preprocess(self, payload, headers=None):
        """(signature key, {input: array}, row format?) of a v1 request."""
        if isinstance(payload, InferRequest):
            raise InvalidInput(f"this server speaks TF Serving's REST protocol: POST "
                               f"/v1/models/{self.name}:predict.")
        try:
            return tf_serving.parse_request(payload, self.specs)
        except checks.InputError as error:
            raise InvalidInput(str(error)) from None

    def validate(self, payload):
        return payload  # `preprocess` has checked the request

    async def predict(self, payload, headers=None):
        key, inputs, row_format = payload
        outputs = await asyncio.get_running_loop().run_in_executor(
            None, self.run, key, inputs)
        try:
            return tf_serving.response(outputs, row_format)
        except ValueError as error:
            raise InvalidInput(str(error)) from None

    def run(self, key, inputs):
        """{output: array} of signature `key`; InvalidInput with the SavedModel's line
        when one of its checks fails."""
        try:
            outputs = self.signatures[key](**{name: tf.constant(value)
                                              for name, value in inputs.items()})
        except tf.errors.InvalidArgumentError as error:
            raise InvalidInput(tf_serving.saved_model_error(error.message)) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}

    def status(self):
        """GET /v1/models/<name>: KServe's answer and TF Serving's."""
        state = "AVAILABLE" if self.ready else "LOADING"
        return {"name": self.name, "ready": self.ready, "model_version_status": [
            {"version": self.version, "state": state,
             "status": {"error_code": "OK", "error_message": ""}}]}

    def metadata(self):
        """GET /v1/models/<name>/metadata: the SignatureDefs, as TF Serving gives them."""
        proto = saved_model_pb2.SavedModel()
        with open(os.path.join(self.version_dir, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        graph = next((g for g in proto.meta_graphs if "serve" in g.meta_info_def.tags),
                     proto.meta_graphs[0])
        definitions = {key: json_format.MessageToDict(
            graph.signature_def[key], preserving_proto_field_name=True)
            for key in sorted(graph.signature_def)}
        return {"model_spec": {"name": self.name, "signature_name": "",
                               "version": self.version},
                "metadata": {"signature_def": {"signature_def": definitions}}}


class TFServingDataPlane(DataPlane):
    """KServe's DataPlane reading v1 bodies as TF Serving does (`tf_serving`)."""

    def decode(self, body, headers, protocol_version=PredictorProtocol.REST_V1.value,
               model_name=None):
        if isinstance(body, bytes) and protocol_version == PredictorProtocol.REST_V1.value:
            try:
                return tf_serving.parse_json(body), {}
            except checks.InputError as error:
                raise InvalidInput(str(error)) from None
        return super().decode(body, headers, protocol_version, model_name)


def add_tf_serving_routes(model):
    """TF Serving's status and metadata routes for `model`, ahead of KServe's (the
    first route that matches a path answers it)."""

    def checked(model_name):
        if model_name != model.name:
            raise ModelNotFound(model_name)
        return model

    async def status(model_name: str):
        return checked(model_name).status()

    async def metadata(model_name: str):
        return checked(model_name).metadata()

    app.add_api_route("/v1/models/{model_name}", status, methods=["GET"])
    app.add_api_route("/v1/models/{model_name}/metadata", metadata, methods=["GET"])


class _OneLineClientErrors(logging.Filter):
    """KServe logs each 400 and 404 as an error with a traceback; they are the
    client's mistakes, and one warning line says it all."""

    STATUS = {InvalidInput: "400 Bad Request", ModelNotFound: "404 Not Found"}

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        status = self.STATUS.get(type(error))
        if status:
            record.msg, record.args, record.exc_info = f"{status}: %s", (error,), None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class BoundModelServer(ModelServer):
    """KServe's ModelServer on a socket bound beforehand (REST only, one worker)."""

    def __init__(self, sock, grace_period=10):
        super().__init__(http_port=sock.getsockname()[1], enable_grpc=False, workers=1,
                         grace_period=grace_period, enable_latency_logging=False)
        self.dataplane = TFServingDataPlane(model_registry=self.registered_models)
        self.sock = sock

    def start(self, models):
        """Serves `models` until SIGINT or SIGTERM (uvicorn's graceful shutdown)."""
        for model in models:
            self.register_model(model)
            add_tf_serving_routes(model)
        logging.getLogger("kserve").addFilter(_OneLineClientErrors())
        rest = RESTServer(FASTAPI_APP_IMPORT_STRING, self.dataplane,
                          self.model_repository_extension, self.http_port,
                          grace_period=self.grace_period, event_loop=self.event_loop,
                          timeout_keep_alive=self.timeout_keep_alive)
        rest.config.host = self.sock.getsockname()[0]  # what its logs name
        rest.run(sockets=[self.sock])
