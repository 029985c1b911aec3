"""Serving: the repository files an export writes, the client ↔ server contract (development server always, real TF
Serving when a Docker engine answers), blessing / deploy / rollback, and a few hundred bad requests."""

import http.client
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format, wrappers_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from kerasline.cli import main
from kerasline.config import BlessConfig
from kerasline.errors import ConfigError
from kerasline.export import export_run
from kerasline.export.blessing import judge
from kerasline.export.repository import MAX_WARMUP_RECORDS, WARMUP_FILE, read_labels, versions, write_blessing
from kerasline.serving.client import GrpcClient, RestClient
from kerasline.serving.devserver import start
from kerasline.serving.launch import docker_answers, docker_command, wait_until_available
from kerasline.serving.tensors import ServingError, read_signature_defs
from kerasline.training.tasks import task_for

MODEL = "tiny"


@pytest.fixture(scope="module")
def repo(trained, tmp_path_factory) -> Path:
    """A private copy of the trained run's repository (other tests export into the original)."""
    root = tmp_path_factory.mktemp("serving") / "exports"
    shutil.copytree(trained["root"] / "exports", root)
    return root


@pytest.fixture(scope="module")
def server(repo):
    dev = start(repo, rest_port=0, grpc_port=0)
    yield {"rest": f"http://127.0.0.1:{dev.rest_port}", "grpc": f"127.0.0.1:{dev.grpc_port}", "ports": dev}
    dev.stop()


@pytest.fixture(scope="module")
def images(trained) -> np.ndarray:
    return task_for(trained["cfg"]).sample_inputs()["image"][:8]


def reference(version_dir: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The in-process SavedModel call every served prediction must equal."""
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    return {name: t.numpy() for name, t in serve(**{k: tf.constant(v) for k, v in inputs.items()}).items()}


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert set(got) == set(want)
    for name in want:
        assert np.asarray(got[name]).shape == want[name].shape, name
        np.testing.assert_allclose(np.asarray(got[name], np.float64), want[name].astype(np.float64), atol=1e-6)


def check_contract(rest_url: str, grpc_target: str, repo: Path, experiment: Path, images: np.ndarray, export_again):
    """What any TF Serving-compatible server must do with our repository. Names come from the signature."""
    rest, grpc_client = RestClient(rest_url), GrpcClient(grpc_target)
    newest = versions(repo / MODEL)[-1]
    status = rest.status(MODEL)["model_version_status"]
    assert {s["version"] for s in status} == {str(newest)} and {s["state"] for s in status} == {"AVAILABLE"}

    metadata = rest.metadata(MODEL)
    assert metadata["model_spec"]["version"] == str(newest)
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    on_disk = read_signature_defs(repo / MODEL / str(newest))["serving_default"]
    assert set(signature["inputs"]) == set(on_disk.inputs) and set(signature["outputs"]) == set(on_disk.outputs)
    by_grpc = grpc_client.metadata(MODEL)
    assert by_grpc["version"] == newest and by_grpc["signature_def"]["signature_def"]["serving_default"] == signature

    (name,) = signature["inputs"]
    inputs = {name: images}
    want = reference(repo / MODEL / str(newest), inputs)
    assert_same(rest.predict(MODEL, inputs, rows=True), want)
    assert_same(rest.predict(MODEL, inputs), want)
    assert_same(grpc_client.predict(MODEL, inputs), want)
    assert_same(rest.predict(MODEL, inputs, version=newest), want)

    # A label: bless and deploy the newest version as stable; both protocols resolve it.
    write_blessing(repo / MODEL, newest, {"verdict": "BLESSED", "reasons": [], "metrics": {"accuracy": 0.5}})
    assert main(["deploy", str(experiment), f"export.dir={repo}"]) == 0
    stable = eventually(lambda: rest.predict(MODEL, inputs, label="stable"))
    assert_same(stable, want)
    assert_same(grpc_client.predict(MODEL, inputs, label="stable"), want)

    # A new version, exported from the same run, is served without a restart; stable stays where it was.
    added = export_again()
    assert added == newest + 1
    eventually(lambda: rest.status(MODEL, version=added))
    assert rest.metadata(MODEL)["model_spec"]["version"] == str(added)
    assert_same(rest.predict(MODEL, inputs, version=added), reference(repo / MODEL / str(added), inputs))
    assert_same(grpc_client.predict(MODEL, inputs, label="stable"), want)
    with pytest.raises(ServingError, match="HTTP 404"):
        rest.status("no_such_model")
    with pytest.raises(ServingError) as refused:
        grpc_client.predict(MODEL, {"not_an_input": images})
    assert refused.value.code == "INVALID_ARGUMENT" and "not_an_input" in refused.value.message


def eventually(call, timeout: float = 60):
    """TF Serving applies a changed models.config at its next poll; the development server at once."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except ServingError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def export_into(trained, repo: Path):
    cfg = trained["cfg"]
    cfg = cfg.model_copy(update={"export": cfg.export.model_copy(update={"dir": str(repo)})})
    run_dir = trained["root"] / "runs" / "tiny" / "run-001"
    return lambda: int(export_run(cfg, run_dir).name)


def test_contract_against_the_development_server(trained, repo, server, images):
    check_contract(server["rest"], server["grpc"], repo, trained["experiment"], images, export_into(trained, repo))


def test_contract_against_tf_serving_in_docker(trained, tmp_path, images):
    why_not = docker_answers()
    if why_not is not None:
        print(f"no Docker engine, TF Serving contract skipped: {why_not}")
        pytest.skip(f"no Docker engine answers `docker info`: {why_not}")
    repo = tmp_path / "exports"
    shutil.copytree(trained["root"] / "exports", repo)
    name = f"kerasline-test-{tmp_path.name}"
    rest_port, grpc_port = free_port(), free_port()
    subprocess.run(docker_command(repo, "127.0.0.1", rest_port, grpc_port, name=name), check=True, timeout=600)
    try:
        wait_until_available(f"http://127.0.0.1:{rest_port}", [MODEL], timeout=300)
        urls = f"http://127.0.0.1:{rest_port}", f"127.0.0.1:{grpc_port}"
        check_contract(*urls, repo, trained["experiment"], images, export_into(trained, repo))
    finally:
        subprocess.run(["docker", "stop", name], capture_output=True, timeout=120)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_export_writes_models_config_batching_and_warmup(trained, repo):
    config = text_format.Parse((repo / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert entry.name == MODEL and entry.base_path == f"/models/{MODEL}" and entry.model_platform == "tensorflow"
    assert versions(repo / MODEL)[-1] in entry.model_version_policy.specific.versions

    batching = text_format.Parse((repo / "batching.config").read_text(), batching_parameters())
    assert batching.max_batch_size.value >= 1 and batching.batch_timeout_micros.value > 0

    version_dir = repo / MODEL / str(versions(repo / MODEL)[0])
    records = list(tf.data.TFRecordDataset(str(version_dir / WARMUP_FILE)).as_numpy_iterator())
    samples = task_for(trained["cfg"]).sample_inputs()["image"]
    assert len(records) == min(len(samples), MAX_WARMUP_RECORDS) == trained["cfg"].export.parity_samples
    signature = read_signature_defs(version_dir)["serving_default"]
    serve = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    for i, record in enumerate(records[:4]):
        request = prediction_log_pb2.PredictionLog.FromString(record).predict_log.request
        assert set(request.inputs) == set(signature.inputs)
        (name,) = request.inputs
        tensor = tf.make_ndarray(request.inputs[name])
        assert request.inputs[name].dtype == signature.inputs[name].dtype
        np.testing.assert_array_equal(tensor, samples[i : i + 1])  # the real held-out inputs, one per record
        serve(**{name: tf.constant(tensor)})  # replayable, as TF Serving replays it while loading


def batching_parameters():
    """TF Serving's BatchingParameters message (session_bundle_config.proto is not in tensorflow-serving-api):
    the same field names and wrapper types, so text_format.Parse rejects any misspelt or mistyped field."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(wrappers_pb2.DESCRIPTOR.serialized_pb))
    wrappers = wrappers_pb2.DESCRIPTOR.name
    file = descriptor_pb2.FileDescriptorProto(name="batching.proto", package="t", dependency=[wrappers])
    message = file.message_type.add(name="BatchingParameters")
    fields = [("max_batch_size", "Int64Value"), ("batch_timeout_micros", "Int64Value"),
              ("thread_pool_name", "StringValue"), ("num_batch_threads", "Int64Value"),
              ("max_enqueued_batches", "Int64Value")]  # fmt: skip
    for number, (name, kind) in enumerate(fields, 1):
        message.field.add(name=name, number=number, type=11, type_name=f".google.protobuf.{kind}", label=1)
    message.field.add(name="allowed_batch_sizes", number=6, type=3, label=3)
    message.field.add(name="pad_variable_length_inputs", number=7, type=8, label=1)
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("t.BatchingParameters"))()


def test_judge_applies_floors_ceilings_and_the_stable_comparison():
    bless = BlessConfig(minimum={"accuracy": 0.9}, maximum={"loss": 0.5}, max_drop={"accuracy": 0.01})
    assert judge({"accuracy": 0.95, "loss": 0.2}, bless, None)[0] == "BLESSED"
    assert judge({"accuracy": 0.95, "loss": 0.2}, bless, {"accuracy": 0.955, "loss": 0.2})[0] == "BLESSED"
    verdict, reasons = judge({"accuracy": 0.95, "loss": 0.2}, bless, {"accuracy": 0.97, "loss": 0.2})
    assert verdict == "NOT_BLESSED" and any("0.9500 < 0.9600" in r for r in reasons)
    assert judge({"accuracy": 0.85, "loss": 0.2}, bless, None)[0] == "NOT_BLESSED"
    assert judge({"accuracy": 0.95, "loss": 0.7}, bless, None)[0] == "NOT_BLESSED"
    assert judge({"accuracy": 1.0}, BlessConfig(), None)[0] == "NOT_BLESSED"  # no thresholds, no blessing
    with pytest.raises(ConfigError, match="bless.minimum.acuracy: not a test metric.*did you mean 'accuracy'"):
        judge({"accuracy": 0.9, "loss": 0.1}, BlessConfig(minimum={"acuracy": 0.5}), None)


def test_evaluate_blesses_deploy_promotes_only_blessed_and_rollback_returns(trained, tmp_path, capsys):
    repo = tmp_path / "exports"
    shutil.copytree(trained["root"] / "exports", repo, ignore=shutil.ignore_patterns("labels.json", "blessings"))
    first = versions(repo / MODEL)[-1]
    experiment = str(trained["experiment"])
    cli = [experiment, f"export.dir={repo}"]

    assert main(["evaluate", *cli, "bless.minimum={accuracy=1.01}"]) == 0
    out = capsys.readouterr().out
    assert f"NOT_BLESSED: {MODEL} version {first}" in out and "< 1.0100 (minimum 1.01)" in out
    assert main(["deploy", *cli]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"error: {MODEL} version {first} is not blessed" in err
    assert "stable" not in (repo / "models.config").read_text()

    assert main(["evaluate", *cli, "bless.minimum={accuracy=0.0}", "bless.max_drop={accuracy=0.0}"]) == 0
    assert f"BLESSED: {MODEL} version {first}" in capsys.readouterr().out
    assert main(["deploy", *cli]) == 0

    # A second version (a verbatim copy of the first, published as TF Serving would see it): blessed against
    # the stable one's metrics, deployed, then rolled back.
    second = first + 1
    shutil.copytree(repo / MODEL / str(first), repo / MODEL / str(second))
    assert main(["evaluate", *cli, "bless.minimum={accuracy=0.0}", "bless.max_drop={accuracy=0.0}"]) == 0
    out = capsys.readouterr().out
    assert f"BLESSED: {MODEL} version {second}" in out and "max_drop 0)" in out  # compared with stable
    assert main(["deploy", *cli]) == 0 and main(["deploy", *cli, "--canary", "--version", str(first)]) == 0
    assert labels_in_config(repo) == {"stable": second, "canary": first}
    assert main(["rollback", *cli]) == 0
    assert f"stable: {MODEL} version {first} (was {second})" in capsys.readouterr().out
    assert labels_in_config(repo)["stable"] == first
    assert [e["action"] for e in read_labels(repo / MODEL)["history"]] == ["deploy", "deploy", "deploy", "rollback"]
    assert main(["rollback", *cli]) == 2
    assert "no earlier stable version" in capsys.readouterr().err
    for version in (first, second):  # labels, blessings and config live outside the version directories
        assert sorted(p.name for p in (repo / MODEL / str(version)).iterdir()) == sorted(
            p.name for p in (trained["root"] / "exports" / MODEL / "1").iterdir()
        )


def labels_in_config(repo: Path) -> dict[str, int]:
    config = text_format.Parse((repo / "models.config").read_text(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert set(entry.version_labels.values()) <= set(entry.model_version_policy.specific.versions)
    return dict(entry.version_labels)


def send(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


SHAPES = st.lists(st.integers(0, 4), min_size=0, max_size=5).filter(lambda s: s[1:] != [28, 28, 1])
BAD_VALUES = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != int(x)),
    st.integers().filter(lambda x: not 0 <= x <= 255),
    st.text(max_size=5),
    st.none(),
    st.fixed_dictionaries({"b64": st.just("AAAA")}),
)


@st.composite
def bad_requests(draw) -> tuple[str, str, bytes]:
    kind = draw(st.sampled_from(["shape", "dtype", "name", "json", "model", "version", "format"]))
    path = f"/v1/models/{MODEL}:predict"
    if kind == "shape":
        body = {"inputs": np.zeros(draw(SHAPES), np.uint8).tolist()}
    elif kind == "dtype":
        image = np.zeros([1, 28, 28, 1], object)
        image[0, draw(st.integers(0, 27)), draw(st.integers(0, 27)), 0] = draw(BAD_VALUES)
        body = {draw(st.sampled_from(["inputs", "instances"])): image.tolist()}
    elif kind == "name":
        name = draw(st.text(min_size=1, max_size=8).filter(lambda n: n != "image"))
        body = draw(st.sampled_from([{"inputs": {name: [[0]]}}, {"instances": [{name: [[0]]}]}]))
    elif kind == "json":
        text = draw(st.text(max_size=40))
        try:
            json.loads(text)
            text += "{"
        except ValueError:
            pass
        return "POST", path, text.encode()
    elif kind == "model":
        model = draw(st.from_regex(r"[a-z_]{1,10}", fullmatch=True).filter(lambda m: m != MODEL))
        return "GET", f"/v1/models/{model}", None
    elif kind == "version":
        suffix = draw(st.sampled_from(["", "/metadata"]))
        return "GET", f"/v1/models/{MODEL}/versions/{draw(st.integers(50, 10**12))}{suffix}", None
    else:
        body = draw(st.sampled_from([[], {}, {"inputs": [], "instances": []}, {"instances": []}, "x", 3]))
    return "POST", path, json.dumps(body).encode()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=bad_requests())
def test_bad_requests_get_a_4xx_with_a_message_and_the_server_keeps_serving(server, request):
    status, payload = send(server["ports"].rest_port, *request)
    assert 400 <= status < 500, (request, status, payload)
    assert isinstance(payload.get("error"), str) and payload["error"], payload


def test_a_50_mb_body_is_refused_and_nothing_binds_beyond_localhost(server, images):
    body = b'{"inputs": [' + b"0," * (25 * 2**20) + b"0]}"
    status, payload = send(server["ports"].rest_port, "POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 413 and "over the limit" in payload["error"]
    rest = RestClient(server["rest"])
    assert rest.predict(MODEL, {"image": images[:2]})["probabilities"].shape == (2, 10)  # still serving
    listening = listening_addresses()
    for port in (server["ports"].rest_port, server["ports"].grpc_port):
        assert listening[port] == {"127.0.0.1"}
    assert all(arg.startswith("127.0.0.1:") for arg in docker_command(Path("."), "127.0.0.1", 1, 2)[7:10:2])


def listening_addresses() -> dict[int, set[str]]:
    """Port → the addresses listening on it, from /proc/net/tcp{,6} (state 0A: LISTEN); IPv4-mapped IPv6
    addresses (gRPC binds ::ffff:127.0.0.1) are written as IPv4."""
    found: dict[int, set[str]] = {}
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state != "0A":
                continue
            address, port = local.split(":")
            if len(address) == 32 and address.startswith("0000000000000000FFFF0000"):
                address = address[24:]
            ip = ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)) if len(address) == 8 else address
            found.setdefault(int(port, 16), set()).add(ip)
    return found


def test_make_serve_without_docker_starts_the_development_server(trained, repo, tmp_path):
    rest_port, grpc_port = free_port(), free_port()
    if docker_answers() is None:
        pytest.skip("a Docker engine answers here; this test covers machines without one")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kerasline.cli", "serve", str(trained["experiment"]), f"export.dir={repo}",
         "--rest-port", str(rest_port), "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        first_line = proc.stdout.readline()
        assert "no Docker engine" in first_line and "development server" in first_line
        wait_until_available(f"http://127.0.0.1:{rest_port}", [MODEL], timeout=60)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
