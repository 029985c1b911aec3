"""Hostile requests (issue #13): whatever malformed request the generators below build, over REST (raw HTTP bytes)
or gRPC, the development server refuses it with a 4xx (over gRPC: a status TF Serving maps to a 4xx) and a message,
never a 5xx, and a valid request to the same model succeeds right after it.

One tiny SavedModel per signature shape the project exports (image, tokens, text, segmentation, generator,
encode/decode, columns), built here from tf.Module (nothing trains), all served by one development server.

The generators widen bad requests from values to structure: bad leaves by dtype (fractions, ranges, 1e400, 5,000
digits, NaN where integers belong, strings, null, booleans, b64 objects where numbers belong and numbers where strings
belong, bad base64, lone surrogates), JSON syntax (literals JSON has not, hex, leading zeros, comments, trailing
commas, truncation), nesting (deep, ragged), sizes (empty, over the body limit, mismatched batch sizes), the row and
columnar shapes (both, neither, a row missing an input, extra keys), duplicate keys, encodings (invalid UTF-8, UTF-16,
UTF-32, stray BOMs), and HTTP itself (paths, methods, Content-Length, Content-Type, the request line); over gRPC,
wrong dtypes, shapes, names, signatures, models, versions, labels and tensor protos that do not hold together.

Profiles: CI runs a fixed, derandomised one; KERASLINE_FUZZ=long a longer, random one. benchmarks/soak.py loads this
file for its generators, models and senders.
"""

import base64
import http.client
import json
import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from kerasline.serving.devserver import start
from kerasline.serving.tensors import HTTP_STATUS

VOCAB = 50  # token ids outside [0, VOCAB) fail in the model's gather: an op error, which must still be a 400
MAX_BODY = 2**20  # the test server's body limit, so that "over the limit" is cheap to send

# model → signature → input → (dtype, shape); None: any size. The shapes of the project's exports.
IMAGE = {"image": ("uint8", [None, 28, 28, 1])}
MODELS: dict[str, dict[str, dict[str, tuple[str, list[int | None]]]]] = {
    "image": {"serving_default": IMAGE},
    "tokens": {"serving_default": {"tokens": ("int32", [None, None])}},
    "text": {"serving_default": {"text": ("string", [None])}},
    "segmentation": {"serving_default": {"image": ("uint8", [None, 16, 16, 1])}},
    "generator": {"serving_default": {"noise": ("float32", [None, 8])}},
    "autoencoder": {"serving_default": IMAGE, "encode": IMAGE, "decode": {"code": ("float32", [None, 4])}},
    "columns": {
        "serving_default": {
            "bill_length_mm": ("float32", [None]),
            "body_mass_g": ("float32", [None]),
            "island": ("string", [None]),
            "sex": ("string", [None]),
        }
    },
}


def _image(image):
    pixels = tf.reshape(tf.cast(image, tf.float32), [-1, 784]) / 255.0
    return {"probabilities": tf.nn.softmax(pixels[:, :10])}


def _tokens(tokens):
    embedding = tf.range(VOCAB, dtype=tf.float32) / VOCAB
    return {"score": tf.reduce_sum(tf.gather(embedding, tokens), axis=1)}


def _text(text):
    return {"length": tf.strings.length(text), "upper": tf.strings.upper(text)}


def _segmentation(image):
    mask = tf.cast(image[..., 0] > 127, tf.uint8)
    return {"mask": mask, "labels": tf.cast(mask, tf.int64)}


def _generator(noise):
    level = tf.cast(tf.clip_by_value((tf.reduce_mean(noise, axis=1) + 1) * 127.5, 0, 255), tf.uint8)
    return {"image": tf.broadcast_to(level[:, None, None, None], tf.stack([tf.shape(noise)[0], 28, 28, 1]))}


def _encode(image):
    return {"code": tf.reduce_mean(tf.reshape(tf.cast(image, tf.float32), [-1, 4, 196]), axis=2)}


def _decode(code):
    level = tf.cast(tf.clip_by_value(tf.reduce_mean(code, axis=1), 0, 255), tf.uint8)
    return {"image": tf.broadcast_to(level[:, None, None, None], tf.stack([tf.shape(code)[0], 28, 28, 1]))}


def _columns(bill_length_mm, body_mass_g, island, sex):
    a = tf.where(tf.math.is_nan(bill_length_mm), 0.0, bill_length_mm)
    b = tf.where(tf.math.is_nan(body_mass_g), 0.0, body_mass_g)
    known = tf.cast(tf.equal(island, "Dream"), tf.float32) + tf.cast(tf.equal(sex, ""), tf.float32)
    return {"value": a + 2.0 * b + known, "class_name": tf.where(a > b, "big", "small")}


BODIES = {
    ("image", "serving_default"): _image,
    ("tokens", "serving_default"): _tokens,
    ("text", "serving_default"): _text,
    ("segmentation", "serving_default"): _segmentation,
    ("generator", "serving_default"): _generator,
    ("autoencoder", "serving_default"): _encode,
    ("autoencoder", "encode"): _encode,
    ("autoencoder", "decode"): _decode,
    ("columns", "serving_default"): _columns,
}


def build_repo(root: Path) -> Path:
    """exports/<model>/1 for every model above, as an export lays it out (no models.config: each served as latest)."""
    for model, signatures in MODELS.items():
        module = tf.Module()
        functions = {}
        for signature, inputs in signatures.items():
            specs = [tf.TensorSpec(shape, tf.as_dtype(dtype), name=n) for n, (dtype, shape) in inputs.items()]
            functions[signature] = tf.function(BODIES[model, signature], input_signature=specs)
            setattr(module, signature, functions[signature])
        tf.saved_model.save(module, str(root / model / "1"), signatures=functions)
    return root


def valid_inputs(model: str, signature: str, batch: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, (dtype, shape) in MODELS[model][signature].items():
        dims = [batch] + [3 if d is None else d for d in shape[1:]]
        if dtype == "string":
            arrays[name] = np.array([f"s{seed}-{i}".encode() for i in range(batch)], dtype=object)
        elif dtype == "float32":
            arrays[name] = rng.normal(size=dims).astype(np.float32)
        elif dtype == "int32":
            arrays[name] = rng.integers(0, VOCAB, dims).astype(np.int32)
        else:
            arrays[name] = rng.integers(0, 256, dims).astype(np.uint8)
    return arrays


def json_ready(array: np.ndarray) -> list:
    """Nested lists; strings as JSON strings (the b64 form is for bytes that are not text)."""
    values = array.tolist()
    if array.dtype == object:
        return _map(values, lambda b: b.decode())
    return values


def _map(nested, leaf):
    return [_map(item, leaf) for item in nested] if isinstance(nested, list) else leaf(nested)


class Raw(str):
    """Text written into a JSON body as it is: what json.dumps would never write."""


class Pairs(list):
    """A JSON object as (key, value) pairs, so that a key can appear twice."""


def dumps(value: object) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{json.dumps(k)}: {dumps(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return dumps(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    return json.dumps(value)


def body_of(values: dict[str, object], rows: bool, signature: str, named: bool = True) -> dict:
    """A predict body from each input's column (batch first): `instances` (rows) or `inputs` (columnar)."""
    body: dict = {} if signature == "serving_default" else {"signature_name": signature}
    bare = len(values) == 1 and not named
    if rows:
        count = len(next(iter(values.values())))
        instances = [{name: column[i] for name, column in values.items()} for i in range(count)]
        body["instances"] = [next(iter(row.values())) for row in instances] if bare else instances
    else:
        body["inputs"] = next(iter(values.values())) if bare else dict(values)
    return body


@dataclass
class Request:
    """One request: REST (the bytes of an HTTP request) or gRPC (a PredictRequest); `kind` names its fault."""

    kind: str
    model: str
    protocol: str = "rest"
    method: str = "POST"
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = b""
    version: str = "HTTP/1.1"
    grpc: predict_pb2.PredictRequest | None = None

    def __repr__(self) -> str:
        if self.protocol == "grpc":
            return f"Request({self.kind}, grpc {str(self.grpc)[:600]!r})"
        body = self.body if self.body is None or len(self.body) < 600 else self.body[:600] + b"..."
        return f"Request({self.kind}, {self.method} {self.path!r} {self.version} {self.headers} {body!r})"


# ---- REST -----------------------------------------------------------------------------------------------------------

INT_RANGES = {"uint8": (0, 255), "int32": (-(2**31), 2**31 - 1)}
HUGE_DIGITS = Raw("9" * 5000)  # past Python's 4,300-digit limit for int(str)
OUT_OF_DOUBLE = st.sampled_from([Raw("1e400"), Raw("-1e400"), Raw("1E+999"), Raw("-2.5e308")])
NOT_JSON = st.sampled_from(
    [
        "undefined", "None", "True", "False", "nil", "nan", "NAN", "Nan", "+NaN", "inf", "+Inf", "INF", "infinity",
        "+Infinity", "-infinity", "NaNa", "Infinit", "0x1F", "0X10", "007", "-01", "+1", ".5", "1.", "1e", "1e+",
        "--1", "1_000", "1;5", "'a'", "\"a", "a", "[", "]", "{}}", "//", "/* */", "#", "\\u0041", "0b1", "1n", "∞",
    ]
).map(Raw)  # fmt: skip
OBJECTS = st.one_of(
    st.fixed_dictionaries({"b64": st.sampled_from(["AAAA", "aGk=", ""])}),
    st.fixed_dictionaries({"b64": st.one_of(st.integers(), st.none(), st.lists(st.integers(), max_size=2))}),
    st.fixed_dictionaries({"b64": st.just("AAAA"), "x": st.integers()}),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
BAD_BASE64 = st.sampled_from(["A", "AAA", "AA=A", "!!!!", "AAAA====", "AA===", "ÿÿÿÿ", "A\u0000AA", "aGk", "\ud800AAA"])
LONE_SURROGATES = st.sampled_from(['"\\ud800"', '"a\\udfff"', '"\\udc00\\ud800"', '"\\ud83d"']).map(Raw)


def bad_leaf(dtype: str) -> st.SearchStrategy[tuple[str, object]]:
    """(what is wrong, a JSON value) that no input of `dtype` accepts where one of its values belongs."""
    if dtype == "string":
        return st.one_of(
            st.tuples(st.just("number-for-string"), st.one_of(st.integers(), st.floats(allow_nan=False))),
            st.tuples(st.just("number-for-string"), st.sampled_from([Raw("NaN"), Raw("-Infinity"), Raw("Inf")])),
            st.tuples(st.just("literal"), st.sampled_from([None, True, False])),
            st.tuples(st.just("bad-base64"), BAD_BASE64.map(lambda s: {"b64": s})),
            st.tuples(st.just("object"), OBJECTS.filter(lambda o: set(o) != {"b64"} or not isinstance(o["b64"], str))),
            st.tuples(st.just("lone-surrogate"), LONE_SURROGATES),
            st.tuples(st.just("list-for-scalar"), st.lists(st.text(max_size=2), max_size=2)),
        )
    if dtype == "float32":
        return st.one_of(
            st.tuples(st.just("string-for-number"), st.text(max_size=6)),
            st.tuples(st.just("literal"), st.sampled_from([None, True, False])),
            st.tuples(st.just("b64-for-number"), OBJECTS),
            st.tuples(st.just("out-of-double"), OUT_OF_DOUBLE),
            st.tuples(st.just("out-of-range"), st.sampled_from([3.5e38, -1e39, 1.7e308, HUGE_DIGITS])),
            st.tuples(st.just("inexact-integer"), st.sampled_from([2**24 + 1, -(2**53) - 1, 2**64, 10**30])),
            st.tuples(st.just("list-for-scalar"), st.lists(st.floats(-1, 1), min_size=2, max_size=2)),
        )
    low, high = INT_RANGES[dtype]
    return st.one_of(
        st.tuples(
            st.just("fraction"), st.floats(-1e6, 1e6, allow_nan=False).filter(lambda x: x != int(x)) | st.just(1.0)
        ),
        st.tuples(st.just("out-of-range"), st.integers().filter(lambda x: not low <= x <= high)),
        st.tuples(st.just("out-of-range"), st.sampled_from([2**53 + 1, 2**63, 2**64, -(2**63) - 1, HUGE_DIGITS])),
        st.tuples(st.just("nan-for-integer"), st.sampled_from([Raw("NaN"), Raw("-NaN"), Raw("Inf"), Raw("-Infinity")])),
        st.tuples(st.just("out-of-double"), OUT_OF_DOUBLE),
        st.tuples(st.just("string-for-number"), st.text(max_size=6)),
        st.tuples(st.just("literal"), st.sampled_from([None, True, False])),
        st.tuples(st.just("b64-for-number"), OBJECTS),
    )


def predict_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


@st.composite
def target(draw) -> tuple[str, str, dict[str, object]]:
    """A model, one of its signatures and a valid batch for it (JSON-ready columns)."""
    model = draw(st.sampled_from(sorted(MODELS)))
    signature = draw(st.sampled_from(sorted(MODELS[model])))
    arrays = valid_inputs(model, signature, batch=draw(st.integers(1, 3)), seed=draw(st.integers(0, 3)))
    return model, signature, {name: json_ready(a) for name, a in arrays.items()}


def leaf_path(draw, nested: object) -> list[int]:
    path = []
    while isinstance(nested, list) and nested:
        path.append(draw(st.integers(0, len(nested) - 1)))
        nested = nested[path[-1]]
    return path


def replace_at(nested: list, path: list[int], value: object) -> None:
    for i in path[:-1]:
        nested = nested[i]
    nested[path[-1]] = value


@st.composite
def bad_value_bodies(draw, dtype: str | None = None, syntax: bool = False) -> tuple[str, str, object]:
    """A valid batch with one value of an input of `dtype` wrong for it (`syntax`: not JSON at all), row or
    columnar."""
    model, signature, name = draw(
        st.sampled_from(
            [(m, s, n) for m in sorted(MODELS) for s in sorted(MODELS[m]) for n in sorted(MODELS[m][s])
             if dtype is None or MODELS[m][s][n][0] == dtype]
        )
    )  # fmt: skip
    arrays = valid_inputs(model, signature, batch=draw(st.integers(1, 3)), seed=draw(st.integers(0, 3)))
    values = {n: json_ready(a) for n, a in arrays.items()}
    dtype = MODELS[model][signature][name][0]
    if syntax:
        kind, leaf = "syntax", draw(NOT_JSON)
    else:
        what, leaf = draw(bad_leaf(dtype))
        kind = f"value:{dtype}:{what}"
    replace_at(values[name], leaf_path(draw, values[name]), leaf)
    body = body_of(values, draw(st.booleans()), signature, named=draw(st.booleans()))
    return kind, model, body


@st.composite
def bad_structure_bodies(draw, kind: str) -> tuple[str, str, object]:
    """Valid values in a wrong structure: nesting, sizes, the row / columnar shape, names, duplicate keys."""
    model, signature, values = draw(target())
    names = sorted(values)
    name = draw(st.sampled_from(names))
    rank = len(MODELS[model][signature][name][1])
    rows, named = draw(st.booleans()), draw(st.booleans())
    if kind == "deep":  # one input wrapped in extra lists: a wrong rank, or past any parser's depth
        depth = draw(st.sampled_from([1, 2, 3, 61, 70, 900, 1100, 5000, 100_000]))
        values[name] = Raw("[" * depth + dumps(values[name]) + "]" * depth)
        rows = False  # a row cannot be cut out of raw text
    elif kind == "ragged":  # one row (or value) not the shape of the others
        column = values[name]
        if rank == 1:
            column[-1] = [column[-1]]
        elif len(column) == 1 or draw(st.booleans()):
            column.append(column[0][:-1] if draw(st.booleans()) else [*column[0], column[0][0]])
        else:
            column[-1] = column[-1][:-1]
    elif kind == "empty":  # [] where a batch is wanted; [[]] where a row has a fixed size; {} for a column
        empties = [[], [[]], [[[]]], {}, [{}]]
        if rank == 1:
            empties.remove([])  # an empty batch of a [B] input is a batch of 0, which TF Serving answers
        if MODELS[model][signature][name][1] == [None, None]:
            empties.remove([[]])  # one row of 0 tokens: a valid [1, 0]
        values[name] = draw(st.sampled_from(empties))
        rows = rows and values[name] != {} and len(names) == 1  # rows cannot be cut out of an object, or of
        # columns of different lengths
    elif kind == "batch-mismatch":
        if len(names) == 1:
            body = body_of(values, False, signature)
            body["inputs"] = {name: values[name], f"{name}_": values[name]}  # an input the signature lacks
            return "structure:extra-input", model, body
        values[name] = values[name] + values[name]
        rows = False  # rows cannot disagree on the batch; columns can
    elif kind == "both-formats":
        body = body_of(values, False, signature)
        body["instances"] = body_of(values, True, signature)["instances"]
        return f"structure:{kind}", model, Pairs(draw(st.permutations(list(body.items()))))
    elif kind == "neither-format":
        body = body_of(values, rows, signature)
        key = "instances" if rows else "inputs"
        body[draw(st.sampled_from(["instance", "input", "Inputs", "INSTANCES", "examples", " inputs"]))] = body.pop(key)
        return f"structure:{kind}", model, body
    elif kind == "row-missing-input":
        body = body_of(values, True, signature)
        del body["instances"][draw(st.integers(0, len(body["instances"]) - 1))][name]
        return f"structure:{kind}", model, body
    elif kind == "extra-input":
        body = body_of(values, rows, signature)
        extra = draw(st.text(max_size=6).filter(lambda n: n not in names))
        target_object = body["instances"][-1] if rows else body["inputs"]
        target_object[extra] = values[name][0]
        return f"structure:{kind}", model, body
    elif kind == "not-an-object":
        return f"structure:{kind}", model, draw(st.sampled_from([[], [values], "inputs", 3, None, True, Raw("NaN")]))
    elif kind == "instances-not-a-list":
        body = {"instances": draw(st.sampled_from([{}, "x", 3, None, values, []]))}
        return f"structure:{kind}", model, body
    elif kind == "mixed-rows":  # some rows objects, some bare values
        body = body_of(values, True, signature)
        body["instances"].append(values[name][0])
        return f"structure:{kind}", model, body
    elif kind == "signature-name":
        body = body_of(values, rows, signature)
        body["signature_name"] = draw(
            st.one_of(st.integers(), st.none(), st.lists(st.text(max_size=3), max_size=2), st.text(min_size=1))
        )
        if isinstance(body["signature_name"], str) and body["signature_name"] in MODELS[model]:
            body["signature_name"] += "_"
        return f"structure:{kind}", model, body
    else:  # duplicate-key: TF Serving keeps the first, Python's json the last; refused rather than answered apart
        body = body_of(values, rows, signature)  # named: every row, and `inputs`, an object
        if draw(st.booleans()):
            key = "instances" if rows else "inputs"
            return f"structure:{kind}", model, Pairs([*body.items(), (key, body[key])])
        if rows:
            row = body["instances"][0]
            body["instances"][0] = Pairs([*row.items(), (name, row[name])])
        else:
            body["inputs"] = Pairs([*body["inputs"].items(), (name, values[name])])
        return f"structure:{kind}", model, body
    return f"structure:{kind}", model, body_of(values, rows, signature, named)


CONTENT_TYPES = st.sampled_from(
    [None, "application/json", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
     "application/json; charset=utf-16", "application/octet-stream", "garbage\x7f", "application/json;;;", ""]
)  # fmt: skip
EXTRA_TOP_LEVEL = st.dictionaries(st.sampled_from(["signature", "model", "x", "inputs_", "instances "]), st.integers())
BAD_BYTES = st.sampled_from([b"\x80", b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xfe", b"\xc3"])
BOMS = [b"\xef\xbb\xbf\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"]


def with_extra_keys(body: object, extra: dict) -> object:
    """Unknown top-level keys: ignored by TF Serving, so they ride along on bodies that are wrong for another reason."""
    if isinstance(body, dict):
        return {**body, **{k: v for k, v in extra.items() if k not in body}}
    return body


DTYPES = ["uint8", "int32", "float32", "string"]
STRUCTURE = [
    "deep",
    "ragged",
    "empty",
    "batch-mismatch",
    "both-formats",
    "neither-format",
    "row-missing-input",
    "extra-input",
    "not-an-object",
    "instances-not-a-list",
    "mixed-rows",
    "signature-name",
    "duplicate-key",
]
ENCODING = ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "bad-byte", "bom", "latin-1"]
SIZE = ["over-the-limit", "declared-huge", "huge-batch-one-bad", "empty-body", "blank"]
HTTP = ["method", "path", "version-path", "label", "tail", "content-length", "chunked", "request-line", "get-body"]
REST_KINDS = (
    [f"value:{d}" for d in DTYPES] + ["syntax"] + [f"structure:{k}" for k in STRUCTURE]
    + [f"encoding:{k}" for k in ENCODING] + [f"size:{k}" for k in SIZE] + [f"http:{k}" for k in HTTP]
)  # fmt: skip


@st.composite
def rest_requests(draw, kind: str | None = None) -> Request:
    """A malformed REST request of `kind` (one of REST_KINDS; None: any): a bad body (values, syntax, structure,
    encoding, size) or bad HTTP around a valid body."""
    family, _, how = (kind or draw(st.sampled_from(REST_KINDS))).partition(":")
    if family in ("value", "syntax", "structure"):
        if family == "structure":
            kind, model, body = draw(bad_structure_bodies(how))
        else:
            kind, model, body = draw(bad_value_bodies(how or None, syntax=family == "syntax"))
        data = dumps(with_extra_keys(body, draw(EXTRA_TOP_LEVEL))).encode("utf-8", "surrogatepass")
        headers = {"Content-Type": draw(CONTENT_TYPES)}
        return Request(kind, model, path=predict_path(model), headers=headers, body=data)
    model, signature, values = draw(target())
    valid = dumps(body_of(values, draw(st.booleans()), signature)).encode()
    if family == "encoding":
        if how == "bad-byte":
            at = draw(st.integers(0, len(valid)))
            data = valid[:at] + draw(BAD_BYTES) + valid[at:]
        elif how == "bom":
            data = draw(st.sampled_from(BOMS)) + valid
        elif how == "latin-1":  # a non-ASCII string as Latin-1 bytes, not UTF-8
            data = dumps({"inputs": {n: ["é"] * 2 for n in values}}).replace("\\u00e9", "é").encode("latin-1")
        else:
            data = valid.decode().encode(how)
        return Request(f"encoding:{how}", model, path=predict_path(model), body=data)
    if family == "size":
        headers = {}
        if how == "over-the-limit":
            data = b'{"inputs": [' + b"0," * (MAX_BODY // 2) + b"0]}"
        elif how == "declared-huge":  # past the drain limit: answered and closed without reading a byte
            data, headers = b"", {"Content-Length": str(draw(st.sampled_from([2**30, 10**12, 2**63])))}
        elif how == "huge-batch-one-bad":
            name = sorted(values)[0]
            dtype = MODELS[model][signature][name][0]
            count = 20_000 if len(MODELS[model][signature][name][1]) <= 2 else 200
            column = [values[name][0]] * count + [draw(bad_leaf(dtype))[1]]
            data = dumps({"inputs": {n: column for n in values}}).encode("utf-8", "surrogatepass")
        else:
            data = b"" if how == "empty-body" else draw(st.sampled_from([b" ", b"\n\t ", b"\x00", b"null"]))
        return Request(f"size:{how}", model, path=predict_path(model), headers=headers, body=data)
    request = Request(f"http:{how}", model, path=predict_path(model), body=valid)
    if how == "method":
        request.method = draw(st.sampled_from(["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "HEAD", "post", "FOO"]))
    elif how == "path":
        garbage = draw(st.text(st.characters(codec="utf-8", exclude_characters=" \r\n\t"), max_size=20))
        request.path = draw(
            st.sampled_from(
                [f"/v1/models/{model}~{garbage}:predict", f"/{garbage}", f"/v2/models/{model}:predict",
                 f"/v1/models/{model}:predict/{garbage}", f"/v1/models/{garbage}x:predict", "/v1/models/:predict",
                 f"/v1/models/{model}/versions:predict", f"/v1/models/{model}:predict:predict", "*"]
            )
        )  # fmt: skip
    elif how == "version-path":
        version = draw(st.sampled_from(["0", "2", "-1", "1.0", "x", "²", "١", "01x", "99999999999999999999999", ""]))
        request.path = f"/v1/models/{model}/versions/{version}:predict"
    elif how == "label":
        request.path = (
            f"/v1/models/{model}/labels/{draw(st.sampled_from(['stable', 'canary', 'x', '1', '%00']))}:predict"
        )
    elif how == "tail":
        tail = draw(st.sampled_from([":classify", ":regress", "/metadata", "", ":Predict", ":predict/"]))
        request.path = f"/v1/models/{model}{tail}"
    elif how == "content-length":
        request.headers = {"Content-Length": draw(st.sampled_from(["", "abc", "-5", "²", "1e3", "0x10", "+12", "1 2"]))}
    elif how == "chunked":
        request.headers = {"Transfer-Encoding": "chunked"}
        request.body = f"{len(valid):x}\r\n".encode() + valid + b"\r\n0\r\n\r\n"
    elif how == "request-line":
        request.version = draw(
            st.sampled_from(["HTTP/2.0", "HTTP/3", "HTTP/1.1x", "HTTP/9.9", "HTTPS/1.1", "http/1.1"])
        )
    else:  # GET with a body, on the predict path
        request.method = "GET"
    return request


def send_rest(port: int, request: Request, timeout: float = 60) -> tuple[int, object]:
    """The request's bytes as they are (no client library tidying them), answered as (status, JSON or raw text)."""
    headers = dict(request.headers)
    if "Content-Length" not in headers and "Transfer-Encoding" not in headers and request.body is not None:
        headers["Content-Length"] = str(len(request.body))
    head = f"{request.method} {request.path} {request.version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items() if v is not None)
    # Latin-1 where it can be (what http.server decodes the head with), so that "²" arrives as one byte
    data = head.encode("latin-1" if max(map(ord, head)) < 256 else "utf-8") + b"\r\n" + (request.body or b"")
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read: the answer is already waiting
        response = http.client.HTTPResponse(sock, method=request.method)
        response.begin()
        raw = response.read()
    try:
        return response.status, json.loads(raw)
    except ValueError:
        return response.status, raw.decode(errors="replace")[:300]


def assert_refused_rest(port: int, request: Request) -> None:
    status, payload = send_rest(port, request)
    assert 400 <= status < 500, (status, payload, request)
    if request.method != "HEAD":
        assert isinstance(payload, dict) and isinstance(payload.get("error"), str) and payload["error"], (
            payload,
            request,
        )


def valid_request(model: str, seed: int = 0, protocol: str = "rest") -> Request:
    signature = sorted(MODELS[model])[seed % len(MODELS[model])]
    arrays = valid_inputs(model, signature, batch=1 + seed % 3, seed=seed)
    if protocol == "grpc":
        request = predict_pb2.PredictRequest()
        request.model_spec.name, request.model_spec.signature_name = model, signature
        for name, array in arrays.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
        return Request("valid", model, "grpc", grpc=request)
    body = body_of({n: json_ready(a) for n, a in arrays.items()}, rows=seed % 2 == 1, signature=signature)
    return Request("valid", model, path=predict_path(model), body=dumps(body).encode())


def assert_serves(port: int, stub, model: str, seed: int = 0) -> None:
    status, payload = send_rest(port, valid_request(model, seed))
    assert status == 200 and ("outputs" in payload or "predictions" in payload), (model, status, payload)
    response = stub.Predict(valid_request(model, seed, "grpc").grpc, timeout=60)
    assert response.outputs, model


# ---- gRPC -----------------------------------------------------------------------------------------------------------

WRONG_DTYPES = {
    "uint8": [np.int8, np.int32, np.float32, np.bool_, np.uint16, object],
    "int32": [np.int64, np.uint8, np.float32, np.float64, np.int16, object],
    "float32": [np.float64, np.float16, np.int32, np.uint8, np.complex64, object],
    "string": [np.float32, np.int32, np.uint8, np.bool_],
}


def shape_proto(*dims: int) -> tensor_shape_pb2.TensorShapeProto:
    return tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


GRPC_KINDS = ["model", "version", "label", "signature", "missing-input", "extra-input", "dtype", "rank", "dims",
              "batch-mismatch", "scalar", "proto-dtype", "proto-shape", "proto-content", "huge-dims", "output-filter",
              "token-out-of-vocab"]  # fmt: skip


@st.composite
def grpc_requests(draw, kind: str | None = None) -> Request:
    """A malformed PredictRequest: its model spec, its inputs' names, dtypes and shapes, or tensor protos that do not
    hold together."""
    model = draw(st.sampled_from(sorted(MODELS)))
    signature = draw(st.sampled_from(sorted(MODELS[model])))
    arrays = valid_inputs(model, signature, batch=draw(st.integers(1, 3)), seed=draw(st.integers(0, 3)))
    name = draw(st.sampled_from(sorted(arrays)))
    dtype, shape = MODELS[model][signature][name]
    request = predict_pb2.PredictRequest()
    request.model_spec.name, request.model_spec.signature_name = model, signature
    kind = kind or draw(st.sampled_from(GRPC_KINDS))
    if kind == "token-out-of-vocab":
        model, signature, name, dtype, shape = "tokens", "serving_default", "tokens", "int32", [None, None]
        arrays = valid_inputs(model, signature, batch=len(arrays[next(iter(arrays))]), seed=draw(st.integers(0, 3)))
        request.model_spec.name, request.model_spec.signature_name = model, signature
    if kind == "dims" and all(d is None for d in shape[1:]):
        kind = "rank"  # no fixed dimension to get wrong
    protos = {n: tf.make_tensor_proto(a) for n, a in arrays.items()}
    if kind == "model":
        request.model_spec.name = draw(st.sampled_from(["", "nope", model.upper(), f"{model} ", "../" + model]))
    elif kind == "version":
        request.model_spec.version.value = draw(st.sampled_from([0, 2, -1, 2**62]))
    elif kind == "label":
        request.model_spec.version_label = draw(st.sampled_from(["stable", "canary", "x", "1"]))
    elif kind == "signature":
        request.model_spec.signature_name = draw(st.sampled_from(["x", "serving_default ", "predict", "decode_"]))
    elif kind == "missing-input":
        del protos[name]
    elif kind == "extra-input":
        protos[draw(st.sampled_from(["extra", name + "_", name.upper(), ""]))] = protos[name]
    elif kind == "dtype":
        wrong = draw(st.sampled_from(WRONG_DTYPES[dtype]))
        array = arrays[name]
        if wrong is object:
            converted = np.array([str(v).encode() for v in array.ravel()], dtype=object).reshape(array.shape)
        elif dtype == "string":
            converted = np.zeros(array.shape, wrong)
        else:
            converted = array.astype(wrong)
        protos[name] = tf.make_tensor_proto(converted)
    elif kind == "rank":
        array = arrays[name]
        protos[name] = tf.make_tensor_proto(draw(st.sampled_from([array[None], array.reshape(-1), array[0]])))
        if protos[name].tensor_shape == tf.make_tensor_proto(array).tensor_shape:
            protos[name] = tf.make_tensor_proto(array[None])
    elif kind == "dims":
        axis = draw(st.sampled_from([i for i, d in enumerate(shape) if d is not None]))
        dims = list(arrays[name].shape)
        dims[axis] = draw(st.sampled_from([0, 1, dims[axis] + 1, dims[axis] * 2]).filter(lambda d: d != dims[axis]))
        protos[name] = tf.make_tensor_proto(np.zeros(dims, arrays[name].dtype))
    elif kind == "batch-mismatch":
        protos[name] = tf.make_tensor_proto(np.concatenate([arrays[name]] * 2))
        if len(protos) == 1:
            protos[name + "_"] = protos[name]  # one input cannot disagree with itself: an unknown second one
    elif kind == "scalar":
        protos[name] = tf.make_tensor_proto(arrays[name].ravel()[0])
    elif kind == "proto-dtype":
        protos[name].dtype = draw(
            st.sampled_from(
                [types_pb2.DT_INVALID, 999, types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT, types_pb2.DT_QINT8]
            )
        )
    elif kind == "proto-shape":
        protos[name].tensor_shape.CopyFrom(shape_proto(*draw(st.sampled_from([(-1,), (-5, 2), (2, -1, 3)]))))
    elif kind == "proto-content":  # the values do not fill the shape
        proto = protos[name]
        if proto.tensor_content:
            proto.tensor_content = (
                proto.tensor_content[: draw(st.integers(0, len(proto.tensor_content) - 1))] or b"\x01"
            )
        else:
            proto.tensor_shape.dim[0].size = 0  # strings: more values than the shape holds
    elif kind == "huge-dims":  # a shape far beyond any request's size, with one value (or none) to repeat
        proto = tensor_pb2.TensorProto(dtype=protos[name].dtype)
        proto.tensor_shape.CopyFrom(shape_proto(*draw(st.sampled_from([(10**6, 28, 28, 1), (10**12, 8), (2**40,)]))))
        if draw(st.booleans()):
            if dtype == "string":
                proto.string_val.append(b"x")
            elif dtype == "float32":
                proto.float_val.append(1.0)
            else:
                proto.int_val.append(1)
        protos[name] = proto
    elif kind == "output-filter":
        request.output_filter.extend(draw(st.lists(st.sampled_from(["nope", "", "probabilities_"]), min_size=1)))
    else:  # token ids outside the vocabulary: the model's gather fails, an op error
        array = arrays[name].copy()
        array.flat[draw(st.integers(0, array.size - 1))] = draw(st.sampled_from([VOCAB, -1, 2**31 - 1]))
        protos[name] = tf.make_tensor_proto(array)
    for n, proto in protos.items():
        request.inputs[n].CopyFrom(proto)
    return Request(f"grpc:{kind}", model, "grpc", grpc=request)


CLIENT_ERRORS = {code for code, status in HTTP_STATUS.items() if 400 <= status < 500}


def assert_refused_grpc(stub, request: Request) -> None:
    try:
        stub.Predict(request.grpc, timeout=60)
    except grpc.RpcError as e:
        assert e.code().name in CLIENT_ERRORS, (e.code().name, e.details(), request)
        assert e.details(), request
    else:
        raise AssertionError(f"accepted: {request}")


# ---- Valid, written oddly -------------------------------------------------------------------------------------------


ODD = ["bom", "whitespace", "minus-zero", "nan-spellings", "extra-top-level", "content-type", "b64"]


@st.composite
def odd_but_valid(draw, how: str) -> tuple[Request, Request]:
    """(a valid request written oddly, the same request written plainly): both must get the same 200 answer."""
    model, signature, values = draw(target())
    rows, named = draw(st.booleans()), draw(st.booleans())
    plain = body_of(values, rows, signature, named)
    odd: object = plain
    prefix, headers = b"", {}
    if how == "bom":
        prefix = b"\xef\xbb\xbf"
    elif how == "whitespace":
        text = dumps(plain).replace(", ", draw(st.sampled_from([",\n\t", " , ", ",\r\n"])))
        return Request("valid:whitespace", model, path=predict_path(model), body=text.encode()), _plain(model, plain)
    elif how == "minus-zero":  # -0 is an integer zero (and 0.0 for floats) in JSON as TF Serving reads it
        zeroed = {n: _map(v, lambda x: Raw("-0") if isinstance(x, int | float) else x) for n, v in values.items()}
        odd = body_of(zeroed, rows, signature, named)
        plain = body_of({n: _map(v, lambda x: 0 if isinstance(x, int | float) else x) for n, v in values.items()},
                        rows, signature, named)  # fmt: skip
    elif how == "nan-spellings":  # rapidjson's NaN and infinities, where a float input takes them
        spelling = draw(st.sampled_from(["NaN", "-NaN", "Inf", "-Inf", "Infinity", "-Infinity"]))
        as_float = {"NaN": "NaN", "-NaN": "NaN", "Inf": "Infinity", "-Inf": "-Infinity"}.get(spelling, spelling)
        floats = [n for n in values if MODELS[model][signature][n][0] == "float32"]
        odd_values, plain_values = dict(values), dict(values)
        for n in floats:
            odd_values[n] = _map(values[n], lambda x: Raw(spelling))
            plain_values[n] = _map(values[n], lambda x: Raw(as_float))
        odd, plain = body_of(odd_values, rows, signature, named), body_of(plain_values, rows, signature, named)
    elif how == "extra-top-level":
        odd = {**plain, "x": 1, "signature": "ignored"}
    elif how == "content-type":
        headers = {"Content-Type": draw(CONTENT_TYPES)}
    else:  # strings as {"b64": ...}
        odd_values = {
            n: _map(v, lambda s: {"b64": base64.b64encode(s.encode()).decode()} if isinstance(s, str) else s)
            for n, v in values.items()
        }
        odd = body_of(odd_values, rows, signature, named)
    request = Request(
        f"valid:{how}", model, path=predict_path(model), headers=headers, body=prefix + dumps(odd).encode()
    )
    return request, _plain(model, plain)


def _plain(model: str, body: object) -> Request:
    return Request("valid", model, path=predict_path(model), body=dumps(body).encode())


# ---- Profiles and fixtures ------------------------------------------------------------------------------------------

QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much, HealthCheck.large_base_example]
settings.register_profile("hostile-ci", max_examples=10, derandomize=True, deadline=None, database=None,
                          suppress_health_check=QUIET, print_blob=True)  # fmt: skip
settings.register_profile("hostile-long", max_examples=300, derandomize=False, deadline=None, database=None,
                          suppress_health_check=QUIET, print_blob=True)  # fmt: skip
LONG = os.environ.get("KERASLINE_FUZZ") == "long"
PROFILE = settings.get_profile("hostile-long" if LONG else "hostile-ci")  # examples per kind
COUNTS: Counter = Counter()  # generated requests by kind, printed when the module's server stops


def sample(strategy: st.SearchStrategy, count: int, seed: int) -> list:
    """`count` examples of a strategy outside a test (the soak run's pool), reproducible from `seed`."""
    found: list = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate], suppress_health_check=QUIET)
    @hypothesis_seed(seed)
    @given(strategy)
    def collect(example) -> None:
        found.append(example)

    collect()
    return found


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = build_repo(tmp_path_factory.mktemp("hostile") / "exports")
    dev = start(root, rest_port=0, grpc_port=0, max_body=MAX_BODY)
    channel = grpc.insecure_channel(f"127.0.0.1:{dev.grpc_port}")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for model in MODELS:  # load every model once, so that no example pays for a load
        assert_serves(dev.rest_port, stub, model)
    yield dev.rest_port, stub
    print(f"\nhostile requests by kind ({sum(COUNTS.values())}): {dict(sorted(COUNTS.items()))}")
    channel.close()
    dev.stop()


@pytest.mark.parametrize("kind", [k for k in REST_KINDS if not k.startswith("value:")])
@PROFILE
@given(data=st.data(), seed=st.integers(0, 5))
def test_malformed_rest_requests_get_a_4xx_and_the_server_keeps_serving(served, kind, data, seed):
    port, stub = served
    request = data.draw(rest_requests(kind), label="request")
    COUNTS[request.kind] += 1
    assert_refused_rest(port, request)
    assert_serves(port, stub, request.model, seed)


@pytest.mark.parametrize("kind", [k for k in REST_KINDS if k.startswith("value:")])
@settings(PROFILE, max_examples=PROFILE.max_examples * 3)  # the widest space: bad leaves by dtype
@given(data=st.data(), seed=st.integers(0, 5))
def test_bad_values_get_a_4xx_and_the_server_keeps_serving(served, kind, data, seed):
    port, stub = served
    request = data.draw(rest_requests(kind), label="request")
    COUNTS[request.kind] += 1
    assert_refused_rest(port, request)
    assert_serves(port, stub, request.model, seed)


@pytest.mark.parametrize("kind", GRPC_KINDS)
@PROFILE
@given(data=st.data(), seed=st.integers(0, 5))
def test_malformed_grpc_requests_get_a_client_error_and_the_server_keeps_serving(served, kind, data, seed):
    port, stub = served
    request = data.draw(grpc_requests(kind), label="request")
    COUNTS[request.kind] += 1
    assert_refused_grpc(stub, request)
    assert_serves(port, stub, request.model, seed)


@pytest.mark.parametrize("how", ODD)
@PROFILE
@given(data=st.data())
def test_valid_requests_written_oddly_get_the_plain_answer(served, how, data):
    """The other side: nothing refused above is refused for a reason TF Serving would not have."""
    port, _ = served
    odd, plain = data.draw(odd_but_valid(how), label="request")
    COUNTS[odd.kind] += 1
    status, answer = send_rest(port, odd)
    assert status == 200, (answer, odd)
    assert answer == send_rest(port, plain)[1] or json.dumps(answer) == json.dumps(send_rest(port, plain)[1])


def with_leaf(model: str, leaf: object) -> bytes:
    """A valid batch of one for the model's default signature, its first value replaced by `leaf`."""
    values = {n: json_ready(a) for n, a in valid_inputs(model, "serving_default", batch=1).items()}
    name = sorted(values)[0]
    replace_at(values[name], leaf_path(lambda s: 0, values[name]), leaf)
    return dumps({"inputs": values}).encode("utf-8", "surrogatepass")


FOUND = [  # each answered 500 (or crashed a handler) before the fix beside it
    Request("value:out-of-range", "tokens", path=predict_path("tokens"), body=b'{"inputs": [[' + b"9" * 5000 + b"]]}"),
    Request("value:lone-surrogate", "text", path=predict_path("text"), body=b'{"inputs": ["\\ud800"]}'),
    Request("value:bad-base64", "text", path=predict_path("text"), body='{"inputs": [{"b64": "ÿÿÿÿ"}]}'.encode()),
    Request("value:bad-base64", "text", path=predict_path("text"), body=b'{"inputs": [{"b64": "AAAA===="}]}'),
    Request(
        "value:out-of-double", "generator", path=predict_path("generator"), body=with_leaf("generator", Raw("1e400"))
    ),
    Request("value:literal", "image", path=predict_path("image"), body=with_leaf("image", True)),
    Request("value:inexact-integer", "columns", path=predict_path("columns"), body=with_leaf("columns", 2**24 + 1)),
    Request("structure:duplicate-key", "text", path=predict_path("text"), body=b'{"inputs": ["a"], "inputs": [1]}'),
    Request("http:method", "image", method="PUT", path=predict_path("image"), body=b"{}"),
    Request("http:request-line", "image", path=predict_path("image"), body=b"{}", version="HTTP/2.0"),
    Request("http:tail", "image", path="/v1/models/image:classify", body=b"{}"),
    Request("http:version-path", "image", path="/v1/models/image/versions/\u00b2:predict", body=b"{}"),
    Request("http:content-length", "image", path=predict_path("image"), headers={"Content-Length": "\u00b2"}, body=b""),
]


@pytest.mark.parametrize("request_", FOUND, ids=lambda r: f"{r.kind}-{r.model}")
def test_what_fuzzing_found_is_a_4xx(served, request_):
    port, stub = served
    assert_refused_rest(port, request_)
    assert_serves(port, stub, request_.model)


def test_grpc_tensors_that_would_not_fit_are_refused_before_they_are_built(served):
    port, stub = served
    for dims, value in [((10**12, 8), [1.0]), ((10**6, 8), []), ((2**40,), [2.0])]:
        request = valid_request("generator", protocol="grpc")
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=shape_proto(*dims), float_val=value)
        request.grpc.inputs["noise"].CopyFrom(proto)
        assert_refused_grpc(stub, request)
    for dtype in (types_pb2.DT_RESOURCE, types_pb2.DT_VARIANT):
        request = valid_request("generator", protocol="grpc")
        request.grpc.inputs["noise"].dtype = dtype
        assert_refused_grpc(stub, request)
    assert_serves(port, stub, "generator")
