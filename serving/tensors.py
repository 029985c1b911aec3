"""What servers and clients share: a SavedModel's SignatureDefs, request checks against them, and TF Serving's JSON
encoding of tensors (row `instances` / columnar `inputs`, `{"b64": ...}` for bytes). Nothing here knows an input's
name: names, dtypes and shapes all come from the signature."""

import base64
import itertools
import json
import math
import re
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

# TF Serving 2.21 parses REST bodies with rapidjson's kParseNanAndInfFlag (tensorflow_serving/util/json_tensor.cc),
# which reads NaN, Inf and Infinity, each with or without a minus; Python's json reads NaN, Infinity and -Infinity.
# The others are rewritten before parsing; strings are matched whole so that nothing inside one is touched.
_STRING_OR_LITERAL = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|-?(?:NaN|Inf(?:inity)?)')
_AS_PYTHON = {"-NaN": "NaN", "Inf": "Infinity", "-Inf": "-Infinity"}
_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")


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


def parse_json(body: bytes) -> object:
    """A REST body as TF Serving parses it: UTF-8 JSON (a BOM skipped), NaN and infinities as rapidjson spells them,
    a number past a double's range refused as rapidjson refuses it (Python would read 1e400 as infinity). A key given
    twice in one object is refused: rapidjson's lookups take the first, Python's json the last, so answering would
    mean answering differently from TF Serving."""
    try:
        text = body.decode("utf-8-sig")
        if "Inf" in text or "-NaN" in text:
            text = _STRING_OR_LITERAL.sub(lambda m: _AS_PYTHON.get(m[0], m[0]), text)
        return json.loads(text, parse_float=_finite, object_pairs_hook=_unique_keys)
    except ValueError as e:  # also UnicodeDecodeError, and int()'s refusal of a number of over 4,300 digits
        raise invalid(f"JSON Parse error: {e}") from None
    except RecursionError:
        raise invalid("JSON Parse error: nested too deeply") from None


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise invalid(f"JSON Parse error: Number too big to be stored in double: {text[:40]}")
    return value


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        twice = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise invalid(f"JSON Parse error: the key {json.dumps(twice)} appears twice in one object")
    return found


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
    check_names(inputs, list(signature.inputs), "the request's inputs")
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
            for i, item in enumerate(instances):
                check_names(item, names, f"instances[{i}]")
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
        if named:
            check_names(value, names, '"inputs"')
        columns = value if named else {names[0]: value}
    try:
        arrays = {name: _to_array(columns[name], numpy_dtype(signature.inputs[name]), name) for name in names}
    except RecursionError:
        raise invalid("an input nested too deeply") from None
    return check_inputs(arrays, signature), rows


def check_names(given: dict, names: list[str], where: str) -> None:
    """TF Serving's rule for named inputs: each one given, nothing else; a failure names what is missing."""
    missing, extra = [n for n in names if n not in given], sorted(set(given) - set(names))
    if missing or extra:
        wrong = ([f"missing input {', '.join(map(repr, missing))}"] if missing else []) + (
            [f"unexpected {', '.join(map(repr, extra))}"] if extra else []
        )
        raise invalid(f"{where}: {'; '.join(wrong)} (the signature's inputs: {', '.join(sorted(names))})")


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
    if array.dtype.kind not in "biuf" or (array.dtype.kind == "b") != (dtype.kind == "b") or _mixes(value, array):
        wanted = "booleans" if dtype.kind == "b" else f"numbers of type {dtype.name}"
        raise invalid(f"{name}: expects {wanted}, got {_first_wrong(value, dtype.kind == 'b')}")
    if dtype.kind in "iu":
        if array.dtype.kind == "f":
            raise invalid(f"{name}: expects integers of type {dtype.name}, got fractional numbers")
        if array.size and (array.min() < np.iinfo(dtype).min or array.max() > np.iinfo(dtype).max):
            raise invalid(f"{name}: values outside the range of {dtype.name}")
    if dtype.kind == "f":
        exact = 2 ** (np.finfo(dtype).nmant + 1) - 1
        if array.dtype.kind == "f" and _beyond(value, array, exact):
            raise invalid(f"{name}: integers beyond ±{exact} lose precision as {dtype.name}; send them as decimals")
        return _as_float(array, dtype, name)
    return array.astype(dtype)


def _flat(value: object, array: np.ndarray) -> list:
    """The leaves of a rectangular nested list (numpy has read it as `array`), flattened at C speed."""
    flat = value if isinstance(value, list) else [value]
    for _ in range(array.ndim - 1):
        flat = list(itertools.chain.from_iterable(flat))
    return flat


def _mixes(value: object, array: np.ndarray) -> bool:
    """Booleans among numbers: numpy reads [true, 2] as integers, TF Serving refuses the true."""
    return array.dtype.kind != "b" and bool in set(map(type, _flat(value, array)))


def _beyond(value: object, array: np.ndarray, exact: int) -> bool:
    """An integer that `exact` bounds, among decimals: numpy reads [0.5, 16777217] as floats, TF Serving (its
    IsLosslessDecimal, value by value) refuses the integer that float32 cannot hold."""
    return any(abs(v) > exact for v in _flat(value, array) if type(v) is int)


def _as_float(array: np.ndarray, dtype: np.dtype, name: str) -> np.ndarray:
    """As TF Serving converts JSON numbers (IsLosslessDecimal): an integer only where `dtype` holds it exactly,
    any number only within its range; NaN and the infinities as they are."""
    exact = 2 ** (np.finfo(dtype).nmant + 1) - 1
    if array.dtype.kind in "iu" and array.size and (array.min() < -exact or array.max() > exact):
        raise invalid(f"{name}: integers beyond ±{exact} lose precision as {dtype.name}; send them as decimals")
    with np.errstate(over="ignore"):
        converted = array.astype(dtype)
    if np.any(np.isinf(converted) & ~np.isinf(array)):
        raise invalid(f"{name}: values outside the range of {dtype.name}")
    return converted


def _first_wrong(value: object, booleans: bool) -> str:
    """The first value in a nested list that is not a JSON number (or boolean), as a message names it."""
    for leaf in _leaves(value):
        if isinstance(leaf, bool) != booleans or not isinstance(leaf, int | float):
            return _json_value(leaf)
    return "integers beyond any integer type"


def _leaves(value: object):
    if isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _json_value(value: object) -> str:
    """A JSON value as a message names it: its type, and the value where short."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return f"the number {json.dumps(value)}"
    if isinstance(value, str):
        return f"the string {json.dumps(value if len(value) <= 40 else value[:40] + '...')}"
    return "a list" if isinstance(value, list) else "an object"


def _string(value: object, name: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode()
        except UnicodeEncodeError:  # a lone surrogate, "\ud800": rapidjson refuses it while parsing
            raise invalid(f"{name}: a string that is not valid Unicode (a lone surrogate)") from None
    if _is_b64(value) and isinstance(value["b64"], str):
        try:
            if not _BASE64.fullmatch(value["b64"]):  # b64decode takes "AAAA====": padding past the last quantum
                raise ValueError
            return base64.b64decode(value["b64"], validate=True)
        except ValueError:  # binascii.Error, and ValueError for a character outside ASCII
            raise invalid(f"{name}: invalid base64 in a b64 value") from None
    raise invalid(f'{name}: expects strings (or {{"b64": ...}} for bytes), got {_json_value(value)}')


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
