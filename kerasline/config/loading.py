"""Reading an experiment: its file, the `key=value` overrides on top, validation into one-line errors; and back
to TOML."""

import re
import tomllib
from collections.abc import Sequence
from pathlib import Path

import tomli_w
from pydantic import ValidationError

from kerasline.config.experiment import ExperimentConfig
from kerasline.config.messages import _describe
from kerasline.errors import ConfigError
from kerasline.shipped import find


def experiment_path(exp: str) -> Path:
    """`mnist_cnn` → ./experiments/mnist_cnn.toml, else the shipped one; a path to a .toml file is taken as it is."""
    if exp.endswith(".toml"):
        return Path(exp)
    if not re.fullmatch(r"[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*", exp):
        raise ConfigError(f"experiment {exp!r}: use a name under experiments/ or a path to a .toml file")
    return find("experiments", f"{exp}.toml")


def load_experiment(exp: str, overrides: Sequence[str] = ()) -> ExperimentConfig:
    path = experiment_path(exp)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such experiment file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    raw.setdefault("name", path.stem)
    for item in overrides:
        apply_override(raw, item)
    return validate(raw, source=str(path))


def apply_override(raw: dict, item: str) -> None:
    """Set `a.b.c=value` in `raw`; the value is read as TOML, else taken as a string."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r}: expected key=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for i, part in enumerate(parents):
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parents[: i + 1])}: is a value, not a section")
    try:
        node[leaf] = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        node[leaf] = text


def validate(raw: dict, source: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(f"{source}: {_describe(e.errors()[0], ExperimentConfig)}") from None


def to_toml(cfg: ExperimentConfig) -> str:
    return tomli_w.dumps(cfg.model_dump(mode="json", exclude_none=True))
