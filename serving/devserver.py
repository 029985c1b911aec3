"""A development and testing stand-in for TF Serving, for machines without a Docker engine. Not a production server.

    python -m serving.devserver --repo exports [--rest-port 8501] [--grpc-port 8500] [--host 127.0.0.1]

It reads the same repository and models.config as TF Serving (base paths under /models are the container's view
of the repository), serves each model's versions by its version policy (default: the latest) and its version
labels, and rescans on every request, so a new export is served without a restart. REST: status, metadata and
predict (row and columnar) with TF Serving's JSON shapes, status codes and {"error": ...} bodies; gRPC:
PredictionService.Predict and GetModelMetadata, ModelService.GetModelStatus. Everything is read from the
SavedModel's signatures: no input or output name is assumed.
"""

import argparse
import contextlib
import json
import math
import re
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, text_format
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from tensorflow_serving.config import model_server_config_pb2

from kerasline.export.repository import CONTAINER_ROOT
from kerasline.serving.tensors import (
    DEFAULT_SIGNATURE,
    ServingError,
    check_inputs,
    decode_json_request,
    encode_json_response,
    invalid,
    parse_json,
    read_signature_defs,
)

MAX_BODY_BYTES = 32 * 2**20  # a larger request is refused with 413 (its body is read and dropped first)
DRAIN_LIMIT = 512 * 2**20  # beyond this a refused body is not read: the connection is closed instead


class Servable:
    """One loaded version: its SignatureDefs (for checks and metadata) and the loaded signature functions."""

    def __init__(self, path: Path, version: int) -> None:
        self.path, self.version = path, version
        self.signature_defs = read_signature_defs(path)
        self.functions = tf.saved_model.load(str(path)).signatures

    def signature(self, name: str) -> meta_graph_pb2.SignatureDef:
        name = name or DEFAULT_SIGNATURE
        if name not in self.functions:
            raise ServingError("FAILED_PRECONDITION", f'Serving signature name: "{name}" not found in signature def')
        return self.signature_defs[name]

    def predict(self, signature_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        signature = self.signature(signature_name)
        check_inputs(inputs, signature)
        try:
            outputs = self.functions[signature_name or DEFAULT_SIGNATURE](
                **{name: tf.constant(value) for name, value in inputs.items()}
            )
        except tf.errors.OpError as e:
            raise ServingError(_code_name(e.error_code), e.message.splitlines()[0]) from None
        return {name: tensor.numpy() for name, tensor in outputs.items()}


class Repository:
    """The models.config view of a repository, rescanned on every request; versions are loaded once and kept
    while they are served."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._lock = threading.Lock()
        self._loaded: dict[Path, Servable] = {}
        self._config: tuple[tuple, list] = ((), [])

    def models(self) -> dict[str, tuple[Path, list[int], dict[str, int]]]:
        """name → (local base path, served versions, labels)."""
        served = {}
        for entry in self._model_configs():
            base = self._local(entry.base_path) if entry.base_path else self.root / entry.name
            existing = sorted(int(p.name) for p in base.iterdir() if p.name.isdigit()) if base.is_dir() else []
            policy = entry.model_version_policy.WhichOneof("policy_choice")
            if policy == "specific":
                versions = sorted(set(existing) & set(entry.model_version_policy.specific.versions))
            elif policy == "all":
                versions = existing
            else:
                keep = entry.model_version_policy.latest.num_versions if policy == "latest" else 1
                versions = existing[-(keep or 1) :]
            served[entry.name] = (base, versions, dict(entry.version_labels))
        return served

    def resolve(self, model: str, version: int | None = None, label: str | None = None) -> Servable:
        models = self.models()
        if model not in models:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({model})")
        base, versions, labels = models[model]
        if label is not None:
            if label not in labels:
                raise ServingError("INVALID_ARGUMENT", f"Unrecognized servable version label: {label}")
            version = labels[label]
        if version is None:
            if not versions:
                raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({model})")
            version = versions[-1]
        if version not in versions:
            raise ServingError("NOT_FOUND", f"Servable not found for request: Specific({model}, {version})")
        return self._load(base / str(version), version)

    def status(self, model: str, version: int | None = None, label: str | None = None) -> list[Servable]:
        if version is not None or label is not None:
            return [self.resolve(model, version, label)]
        models = self.models()
        if model not in models or not models[model][1]:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {model}")
        base, versions, _ = models[model]
        return [self._load(base / str(v), v) for v in versions]

    def _load(self, path: Path, version: int) -> Servable:
        with self._lock:  # one load per version, however many requests arrive while it loads
            if path not in self._loaded:
                self._loaded[path] = Servable(path, version)
            return self._loaded[path]

    def _model_configs(self) -> list:
        path = self.root / "models.config"
        try:
            stat = path.stat()
        except FileNotFoundError:  # no config: every model directory, latest version, as --model_base_path would
            config = model_server_config_pb2.ModelServerConfig()
            for p in sorted(self.root.iterdir()):
                if p.is_dir() and not p.name.startswith("."):
                    config.model_config_list.config.add(name=p.name, base_path=str(p))
            return list(config.model_config_list.config)
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        if self._config[0] != key:
            config = text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())
            self._config = (key, list(config.model_config_list.config))
            self._forget_unserved()
        return self._config[1]

    def _forget_unserved(self) -> None:
        with self._lock:
            live = {self._local(e.base_path) if e.base_path else self.root / e.name for e in self._config[1]}
            for path in [p for p in self._loaded if p.parent not in live]:
                del self._loaded[path]

    def _local(self, base_path: str) -> Path:
        """models.config names the container's paths (/models/<name>); here they are the repository's."""
        if base_path == CONTAINER_ROOT or base_path.startswith(CONTAINER_ROOT + "/"):
            return self.root / base_path[len(CONTAINER_ROOT) :].lstrip("/")
        return Path(base_path) if Path(base_path).is_absolute() else self.root / base_path


ROUTE = re.compile(
    r"^/v1/models/(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)


def make_handler(repo: Repository, max_body: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as TF Serving's REST server
        disable_nagle_algorithm = True  # headers and body go out as two writes: without this, +40 ms per answer
        timeout = 60  # seconds a connection may sit idle mid-request

        def do_GET(self) -> None:
            self._answer(self._get)

        def do_POST(self) -> None:
            self._answer(self._post)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            """http.server's own refusals (an unknown method, a request line or headers it cannot read) as TF Serving
            answers them: a JSON error and a 4xx. An unknown method is TF Serving's "Malformed request" (400), and so
            is an HTTP version past 1.x (http.server's 505); the connection is closed, its body unread."""
            command, path = getattr(self, "command", None) or "", getattr(self, "path", None) or ""
            self.request_version = self.protocol_version  # else an unreadable request line gets no status line
            if code == 501:
                code, message = 400, f"Malformed request: {command} {path}"
            elif code >= 500:
                code = 400
            data = json.dumps({"error": message or explain or "malformed request"}).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Connection", "close")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
            pass  # one line per request would drown the terminal; errors go back to the client

        def _get(self) -> dict:
            model, version, label, tail = self._route()
            servables = repo.status(model, version, label) if tail is None else None
            if tail is None:
                return {"model_version_status": [_status_json(s.version) for s in servables]}
            if tail == "/metadata":
                return _metadata_json(model, repo.resolve(model, version, label))
            raise ServingError("NOT_FOUND", f"Malformed request: GET {self.path}")

        def _post(self) -> dict:
            model, version, label, tail = self._route()
            body = self._body()
            if tail != ":predict":
                if tail in (":classify", ":regress"):
                    _refuse_classify_regress(repo.resolve(model, version, label), tail[1:], parse_json(body))
                raise ServingError("NOT_FOUND", f"Malformed request: POST {self.path}")
            request = parse_json(body)
            servable = repo.resolve(model, version, label)
            name = request.get("signature_name", DEFAULT_SIGNATURE) if isinstance(request, dict) else ""
            if not isinstance(name, str):
                raise invalid('"signature_name" must be a string')
            inputs, rows = decode_json_request(request, servable.signature(name))
            return encode_json_response(servable.predict(name, inputs), rows)

        def _route(self) -> tuple[str, int | None, str | None, str | None]:
            match = ROUTE.match(self.path.split("?", 1)[0])
            if not match:
                raise ServingError("NOT_FOUND", f"Malformed request: {self.command} {self.path}")
            version = match["version"]
            if version is not None and not (version.isascii() and version.isdigit()):  # int() refuses "²"
                raise ServingError("NOT_FOUND", f"Malformed request: version {version!r} is not an integer")
            return match["model"], int(version) if version else None, match["label"], match["tail"]

        def _body(self) -> bytes:
            length = self.headers.get("Content-Length")
            if length is None or not (length.isascii() and length.isdigit()):
                self.close_connection = True
                raise ServingError("INVALID_ARGUMENT", "a request body with a Content-Length is required")
            length = int(length)
            if length > max_body:
                self._drain(length)
                raise ServingError(
                    "RESOURCE_EXHAUSTED", f"request body of {length} bytes is over the limit of {max_body} bytes"
                )
            return self.rfile.read(length)

        def _drain(self, length: int) -> None:
            """Read a refused body so the client sees our answer rather than a reset; past a limit, hang up."""
            if length > DRAIN_LIMIT:
                self.close_connection = True
                return
            while length > 0:
                chunk = self.rfile.read(min(length, 2**20))
                if not chunk:
                    break
                length -= len(chunk)

        def _answer(self, handle) -> None:
            try:
                status, payload = 200, handle()
            except ServingError as e:
                status, payload = e.http_status, {"error": e.message}
            except Exception as e:  # a bug or a model that cannot load: answer, and keep serving
                status, payload = 500, {"error": f"{type(e).__name__}: {e}"}
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, repo: Repository, max_body: int = MAX_BODY_BYTES) -> None:
        self.repo, self.max_body = repo, max_body

    def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.ServicerContext
    ) -> predict_pb2.PredictResponse:
        with _grpc_errors(context):
            servable = _resolve(self.repo, request.model_spec)
            inputs = {name: _read_tensor(name, proto, self.max_body) for name, proto in request.inputs.items()}
            outputs = servable.predict(request.model_spec.signature_name, inputs)
            unknown = sorted(set(request.output_filter) - set(outputs))
            if unknown:
                raise invalid(f"output_filter names unknown outputs {unknown}")
            response = predict_pb2.PredictResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
            for name in request.output_filter or outputs:
                response.outputs[name].CopyFrom(tf.make_tensor_proto(outputs[name]))
            return response

    def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        with _grpc_errors(context):
            if list(request.metadata_field) != ["signature_def"]:
                raise invalid('metadata_field must be ["signature_def"], the only field TF Serving answers')
            servable = _resolve(self.repo, request.model_spec)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = request.model_spec.name
            response.model_spec.version.value = servable.version
            response.metadata["signature_def"].Pack(_signature_map(servable))
            return response


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        with _grpc_errors(context):
            spec = request.model_spec
            version = spec.version.value if spec.HasField("version") else None
            servables = self.repo.status(spec.name, version, spec.version_label or None)
            response = get_model_status_pb2.GetModelStatusResponse()
            for servable in servables:
                response.model_version_status.add(
                    version=servable.version, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE
                )
            return response


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 drops concurrent connects, which then wait a second to retry


@dataclass
class DevServer:
    rest_port: int
    grpc_port: int
    stop: Callable[[], None]


def start(
    repo: Path, host: str = "127.0.0.1", rest_port: int = 8501, grpc_port: int = 8500, max_body: int = MAX_BODY_BYTES
) -> DevServer:
    """Both servers on background threads; port 0 picks a free port (the chosen ports are returned)."""
    repository = Repository(repo)
    http = _HTTPServer((host, rest_port), make_handler(repository, max_body))
    rpc = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        options=[("grpc.max_receive_message_length", max_body), ("grpc.so_reuseport", 0)],
    )
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(repository, max_body), rpc)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(repository), rpc)
    bound = rpc.add_insecure_port(f"{host}:{grpc_port}")
    if not bound:
        http.server_close()
        raise ServingError("UNAVAILABLE", f"cannot bind gRPC to {host}:{grpc_port}")
    rpc.start()
    threading.Thread(target=http.serve_forever, daemon=True).start()

    def stop() -> None:
        http.shutdown()
        http.server_close()
        rpc.stop(grace=None)

    return DevServer(http.server_address[1], bound, stop)


def _resolve(repo: Repository, spec) -> Servable:
    version = spec.version.value if spec.HasField("version") else None
    return repo.resolve(spec.name, version, spec.version_label or None)


def _refuse_classify_regress(servable: Servable, method: str, request: object) -> None:
    """TF Serving answers :classify and :regress on a predict signature (every signature we export) with
    INVALID_ARGUMENT; the development server implements neither, so only a real classify/regress signature is
    UNIMPLEMENTED here."""
    name = (request.get("signature_name") if isinstance(request, dict) else None) or DEFAULT_SIGNATURE
    if not isinstance(name, str):
        raise invalid('"signature_name" must be a string')
    expected = f"tensorflow/serving/{method}"
    was = servable.signature(name).method_name
    if was != expected:
        raise invalid(f"Expected {method} signature method_name to be {expected}. Was: {was}")
    raise ServingError("UNIMPLEMENTED", f"{method} is not implemented by the development server")


def _read_tensor(name: str, proto, limit: int) -> np.ndarray:
    """A request's TensorProto as an array, or INVALID_ARGUMENT; a shape whose values would pass the request size
    limit is refused before anything is allocated (one value may stand for a whole shape)."""
    try:
        dtype = tf.dtypes.as_dtype(proto.dtype)
    except TypeError:
        raise invalid(f"{name}: unknown dtype {proto.dtype}") from None
    if dtype in (tf.resource, tf.variant):
        raise invalid(f"{name}: a {dtype.name} tensor cannot be sent in a request")
    sizes = [d.size for d in proto.tensor_shape.dim]
    if any(size < 0 for size in sizes):
        raise invalid(f"{name}: negative dimension in shape {sizes}")
    values = math.prod(sizes)
    if values * (1 if dtype == tf.string else dtype.size) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"{name}: a tensor of shape {sizes} is over {limit} bytes")
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError, OverflowError, KeyError) as e:
        raise invalid(f"cannot read the input tensor {name}: {e}") from None


def _signature_map(servable: Servable) -> get_model_metadata_pb2.SignatureDefMap:
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    for name, signature in servable.signature_defs.items():
        signature_map.signature_def[name].CopyFrom(signature)
    return signature_map


def _metadata_json(model: str, servable: Servable) -> dict:
    signature_map = json_format.MessageToDict(_signature_map(servable), preserving_proto_field_name=True)
    return {
        "model_spec": {"name": model, "signature_name": "", "version": str(servable.version)},
        "metadata": {"signature_def": signature_map},
    }


def _status_json(version: int) -> dict:
    return {"version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}


def _code_name(code: int) -> str:
    return {3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 8: "RESOURCE_EXHAUSTED", 9: "FAILED_PRECONDITION"}.get(
        code, "INTERNAL"
    )


@contextlib.contextmanager
def _grpc_errors(context: grpc.ServicerContext):
    """ServingError → the same status over gRPC; anything else → INTERNAL, and the server keeps serving."""
    try:
        yield
    except ServingError as e:
        context.abort(grpc.StatusCode[e.code], e.message)
    except Exception as e:
        context.abort(grpc.StatusCode.INTERNAL, f"{type(e).__name__}: {e}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.devserver", description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=Path("exports"), help="the repository (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: %(default)s)")
    parser.add_argument("--rest-port", type=int, default=8501, help="default: %(default)s")
    parser.add_argument("--grpc-port", type=int, default=8500, help="default: %(default)s")
    parser.add_argument("--max-body-mb", type=float, default=MAX_BODY_BYTES / 2**20, help="default: %(default)s")
    args = parser.parse_args(argv)
    server = start(args.repo, args.host, args.rest_port, args.grpc_port, int(args.max_body_mb * 2**20))
    print(
        f"development server (a stand-in for testing, not for production): {args.repo}/ on "
        f"http://{args.host}:{server.rest_port} (REST) and {args.host}:{server.grpc_port} (gRPC)",
        flush=True,
    )
    stopped = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopped.set())
    stopped.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
