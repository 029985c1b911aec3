"""Nothing is loaded in a way that can run code, and nothing listens beyond 127.0.0.1 by default."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SOURCES = [p for d in ("kerasline", "pipelines", "models", "training", "export") for p in (ROOT / d).rglob("*.py")]


def calls(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def test_no_pickle_yaml_or_eval_anywhere():
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        imported = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom) for a in n.names}
        imported |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        assert not imported & {"pickle", "cloudpickle", "dill", "yaml", "marshal", "shelve"}, path
        assert not {name for _, name in calls(path)} & {"eval", "exec"}, path


def test_every_numpy_load_refuses_pickles():
    loads = [(path, node) for path in SOURCES for node, name in calls(path) if name == "np.load"]
    assert loads
    for path, node in loads:
        flags = {k.arg: ast.unparse(k.value) for k in node.keywords}
        assert flags.get("allow_pickle") == "False", f"{path}: {ast.unparse(node)}"


def test_models_are_restored_from_weights_only():
    """A .keras file can carry code (Lambda layers); runs restore arrays into a model built from config."""
    names = {name for path in SOURCES for _, name in calls(path)}
    assert not any(name.endswith(("load_model", "model_from_json", "from_config")) for name in names)


def test_servers_bind_to_loopback():
    assert "--host 127.0.0.1" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("key", ["name", "export.model_name"])
@pytest.mark.parametrize("value", ["../escape", "/abs", "a/b", ".hidden"])
def test_names_cannot_leave_the_runs_and_export_folders(key, value):
    from kerasline.config import load_experiment
    from kerasline.errors import ConfigError

    with pytest.raises(ConfigError, match="string should match pattern"):
        load_experiment("mnist_cnn", [f"{key}={value}"])
