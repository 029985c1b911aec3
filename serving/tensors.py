"""What servers and clients share: a SavedModel's SignatureDefs, request checks against them, and TF Serving's JSON
encoding of tensors (row `instances` / columnar `inputs`, `{"b64": ...}` for bytes). Nothing here knows an input's
name: names, dtypes and shapes all come from the signature."""

import base64
import binascii
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from kerasline.errors import UserError

# TF Serving's mapping of canonical error codes to HTTP statuses (what its REST API answers).
HTTP_STATUS = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "INTERNAL": 500,
}
DEFAULT_SIGNATURE = "serving_default"


class ServingError(UserError):
    """A request a server refused, or failed: `code` is the canonical (gRPC) status name or `HTTP <status>`, and
    `message` the server's own words."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


def read_signature_defs(saved_model: Path) -> dict[str, meta_graph_pb2.SignatureDef]:
    """The SignatureDefs as TF Serving reads them, from saved_model.pb, without loading the model."""
    proto = saved_model_pb2.SavedModel.FromString((saved_model / "saved_model.pb").read_bytes())
    return dict(proto.meta_graphs[0].signature_def)


def numpy_dtype(info: meta_graph_pb2.TensorInfo) -> np.dtype:
    dtype = tf.dtypes.as_dtype(info.dtype)
    return np.dtype(object) if dtype == tf.string else np.dtype(dtype.as_numpy_dtype)


def dims(info: meta_graph_pb2.TensorInfo) -> list[int] | None:
    """-1 for an unknown dimension; None for an unknown rank."""
    return None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]


def check_inputs(inputs: dict[str, np.ndarray], signature: meta_graph_pb2.SignatureDef) -> dict[str, np.ndarray]:
    """Names, dtypes and shapes against the signature, as TF Serving checks them, each failure one clear message."""
    missing, extra = sorted(set(signature.inputs) - set(inputs)), sorted(set(inputs) - set(signature.inputs))
    if missing or extra:
        raise invalid(
            f"input names do not match the signature: missing {missing}, unexpected {extra} "
            f"(expected {sorted(signature.inputs)})"
        )
    for name, info in signature.inputs.items():
        array, want = inputs[name], numpy_dtype(info)
        is_string = want.kind == "O"
        if (array.dtype.kind in "OS") != is_string or (not is_string and array.dtype != want):
            got = "string" if array.dtype.kind in "OS" else array.dtype.name
            raise invalid(f"{name}: expects {tf.dtypes.as_dtype(info.dtype).name} but {got} was given")
        shape = dims(info)
        if shape is not None and (
            array.ndim != len(shape) or any(d not in (-1, s) for d, s in zip(shape, array.shape, strict=True))
        ):
            raise invalid(f"{name}: expects shape {shape} (-1: any) but got {list(array.shape)}")
    batch = {array.shape[0] for array in inputs.values() if array.ndim}
    if len(batch) > 1:
        raise invalid(f"inputs disagree on the batch size (dimension 0): {sorted(batch)}")
    return inputs


def decode_json_request(body: object, signature: meta_graph_pb2.SignatureDef) -> tuple[dict[str, np.ndarray], bool]:
    """A REST predict body → (inputs as arrays of the signature's dtypes, whether it used the row format)."""
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    rows = "instances" in body
    if rows == ("inputs" in body):
        raise invalid('the request must have exactly one of "instances" (row format) or "inputs" (columnar)')
    names = list(signature.inputs)
    if rows:
        instances = body["instances"]
        if not isinstance(instances, list) or not instances:
            raise invalid('"instances" must be a non-empty list')
        named = [isinstance(item, dict) and not _is_b64(item) for item in instances]
        if all(named):
            for item in instances:
                if set(item) != set(names):
                    raise invalid(f"each instance must name every input {sorted(names)}, got {sorted(item)}")
            columns = {name: [item[name] for item in instances] for name in names}
        elif any(named) or len(names) != 1:
            raise invalid(f"instances must be objects naming the inputs {sorted(names)}, one per row")
        else:
            columns = {names[0]: instances}
    else:
        value = body["inputs"]
        named = isinstance(value, dict) and not _is_b64(value)
        if not named and len(names) != 1:
            raise invalid(f'"inputs" must be an object naming the inputs {sorted(names)}')
        columns = value if named else {names[0]: value}
    missing, extra = sorted(set(names) - set(columns)), sorted(set(columns) - set(names))
    if missing or extra:
        raise invalid(f"input names do not match the signature: missing {missing}, unexpected {extra}")
    arrays = {name: _to_array(columns[name], numpy_dtype(signature.inputs[name]), name) for name in names}
    return check_inputs(arrays, signature), rows


def encode_json_response(outputs: dict[str, np.ndarray], rows: bool) -> dict:
    """TF Serving's answer: `predictions` (one value per row, or one object per row) or `outputs`."""
    values = {name: _jsonable(array, name) for name, array in outputs.items()}
    if not rows:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    sizes = {array.shape[0] if array.ndim else None for array in outputs.values()}
    if len(sizes) != 1 or None in sizes:
        raise invalid("the row format needs every output to have the same batch size; use the columnar format")
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    return {"predictions": [dict(zip(values, row, strict=True)) for row in zip(*values.values(), strict=True)]}


def encode_json_value(array: np.ndarray) -> object:
    """Client side: an array as a JSON value, bytes as {"b64": ...}."""
    if array.dtype.kind in "OS":
        return _map(array.tolist(), lambda b: {"b64": base64.b64encode(b).decode()} if isinstance(b, bytes) else b)
    return array.tolist()


def decode_json_value(value: object) -> np.ndarray:
    """Client side: a JSON value from a server as an array, {"b64": ...} back to bytes."""
    if _contains_b64(value):
        return np.array(_map(value, lambda v: base64.b64decode(v["b64"]) if _is_b64(v) else v), dtype=object)
    return np.array(value)


def _to_array(value: object, dtype: np.dtype, name: str) -> np.ndarray:
    if dtype.kind == "O":
        strings = _map(value, lambda v: _string(v, name))
        _shape(strings, name)  # rectangular, or numpy would build an array of lists
        return np.array(strings, dtype=object)
    try:
        array = np.array(value)
    except (ValueError, TypeError, OverflowError):
        raise invalid(f"{name}: not a rectangular array of numbers in range") from None
    if array.dtype.kind not in "biuf":
        raise invalid(f"{name}: expects numbers of type {dtype.name}, got JSON values that are not numbers")
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            raise invalid(f"{name}: expects integers of type {dtype.name}, got fractional numbers")
        if array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
            raise invalid(f"{name}: values outside the range of {dtype.name}")
    if dtype.kind == "b" and array.dtype.kind != "b":
        raise invalid(f"{name}: expects booleans")
    return array.astype(dtype)


def _string(value: object, name: str) -> bytes:
    if isinstance(value, str):
        return value.encode()
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True)
        except binascii.Error:
            raise invalid(f"{name}: invalid base64 in a b64 value") from None
    raise invalid(f'{name}: expects strings (or {{"b64": ...}} for bytes), got {type(value).__name__}')


def _shape(nested: object, name: str) -> tuple[int, ...]:
    if not isinstance(nested, list):
        return ()
    shapes = {_shape(item, name) for item in nested}
    if len(shapes) > 1:
        raise invalid(f"{name}: not a rectangular array")
    return (len(nested), *(shapes.pop() if shapes else ()))


def _map(nested: object, leaf) -> object:
    return [_map(item, leaf) for item in nested] if isinstance(nested, list) else leaf(nested)


def _is_b64(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"}


def _contains_b64(value: object) -> bool:
    while isinstance(value, list) and value:
        value = value[0]
    return _is_b64(value)


def _jsonable(array: np.ndarray, name: str) -> object:
    if array.dtype.kind not in "OS":
        return array.tolist()

    def text_or_b64(b: bytes) -> object:
        if not name.endswith("_bytes"):  # TF Serving's rule: such outputs are always base64
            try:
                return b.decode()
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(b).decode()}

    return _map(array.tolist(), text_or_b64)
