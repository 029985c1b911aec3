"""A TF Serving client: REST (status, metadata, row and columnar predict) and gRPC (Predict, GetModelMetadata).

Works the same against TF Serving and the development server. Every refusal is a ServingError carrying the
server's own message; inputs are {name: array}, arrays of bytes travel as {"b64": ...} over REST.
"""

import http.client
import json
import urllib.parse

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from kerasline.serving.tensors import DEFAULT_SIGNATURE, ServingError, decode_json_value, encode_json_value


class RestClient:
    """One keep-alive HTTP connection (so one client per thread), reopened when the server closes it."""

    def __init__(self, url: str, timeout: float = 30) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ServingError("INVALID_ARGUMENT", f"server URL {url!r}: expected http://HOST:PORT")
        self.host, self.port, self.timeout = parsed.hostname, parsed.port or 80, timeout
        self._connection: http.client.HTTPConnection | None = None

    def status(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", _path(model, version, label))

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        return self._call("GET", _path(model, version, label) + "/metadata")

    def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        rows: bool = False,
        version: int | None = None,
        label: str | None = None,
        signature: str = DEFAULT_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        """rows=True: the row format (`instances`, one per example); else columnar (`inputs`)."""
        if rows:
            count = len(next(iter(inputs.values())))
            # array[i, ...] is a 0-d array even where array[i] would be a bare bytes or float scalar
            values = {
                name: [encode_json_value(np.asarray(v)[i, ...]) for i in range(count)] for name, v in inputs.items()
            }
            if len(inputs) == 1:
                instances = next(iter(values.values()))
            else:
                instances = [{name: column[i] for name, column in values.items()} for i in range(count)]
            body = {"signature_name": signature, "instances": instances}
        else:
            body = {"signature_name": signature, "inputs": {name: encode_json_value(v) for name, v in inputs.items()}}
        answer = self._call("POST", _path(model, version, label) + ":predict", json.dumps(body).encode())
        if rows:
            predictions = answer["predictions"]
            if predictions and isinstance(predictions[0], dict) and set(predictions[0]) != {"b64"}:
                return {name: decode_json_value([row[name] for row in predictions]) for name in predictions[0]}
            return {self._only_output(model, version, label, signature): decode_json_value(predictions)}
        outputs = answer["outputs"]
        if isinstance(outputs, dict) and set(outputs) != {"b64"}:
            return {name: decode_json_value(value) for name, value in outputs.items()}
        return {self._only_output(model, version, label, signature): decode_json_value(outputs)}

    def _only_output(self, model: str, version: int | None, label: str | None, signature: str) -> str:
        """TF Serving leaves a single output unnamed in its answer: the name comes from the metadata."""
        signatures = self.metadata(model, version, label)["metadata"]["signature_def"]["signature_def"]
        return next(iter(signatures[signature]["outputs"]))

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _call(self, method: str, path: str, body: bytes | None = None) -> dict:
        for attempt in (1, 2):  # a kept-alive connection the server has since closed fails once; reopen it
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                self._connection.request(method, path, body=body, headers=headers)
                response = self._connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
                self.close()
                if attempt == 2:
                    raise ServingError("UNAVAILABLE", f"{self.host}:{self.port}: {e}") from None
            except OSError as e:
                self.close()
                raise ServingError("UNAVAILABLE", f"{self.host}:{self.port}: {e}") from None
        try:
            payload = json.loads(data)
        except json.JSONDecodeError:
            payload = {"error": data.decode(errors="replace")[:500]}
        if response.status != 200:
            message = payload.get("error", str(payload)) if isinstance(payload, dict) else str(payload)
            raise ServingError(f"HTTP {response.status}", message)
        return payload


class GrpcClient:
    """PredictionService over one channel (thread-safe: share it)."""

    def __init__(self, target: str, timeout: float = 30, max_message_bytes: int = 64 * 2**20) -> None:
        options = [("grpc.max_receive_message_length", max_message_bytes)]
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.target, self.timeout = target, timeout

    def predict(
        self,
        model: str,
        inputs: dict[str, np.ndarray],
        *,
        version: int | None = None,
        label: str | None = None,
        signature: str = DEFAULT_SIGNATURE,
    ) -> dict[str, np.ndarray]:
        request = predict_pb2.PredictRequest()
        _spec(request.model_spec, model, version, label, signature)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        response = self._call(self.stub.Predict, request)
        return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}

    def metadata(self, model: str, version: int | None = None, label: str | None = None) -> dict:
        """The model's SignatureDefMap, as a dict (proto field names)."""
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        _spec(request.model_spec, model, version, label, "")
        response = self._call(self.stub.GetModelMetadata, request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return {
            "version": response.model_spec.version.value,
            "signature_def": json_format.MessageToDict(signature_map, preserving_proto_field_name=True),
        }

    def close(self) -> None:
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as e:
            raise ServingError(e.code().name, e.details() or f"{self.target}: no details") from None


def _spec(spec, model: str, version: int | None, label: str | None, signature: str) -> None:
    spec.name = model
    spec.signature_name = signature
    if version is not None:
        spec.version.value = version
    if label is not None:
        spec.version_label = label


def _path(model: str, version: int | None, label: str | None) -> str:
    path = f"/v1/models/{urllib.parse.quote(model, safe='')}"
    if version is not None:
        path += f"/versions/{version}"
    elif label is not None:
        path += f"/labels/{urllib.parse.quote(label, safe='')}"
    return path
