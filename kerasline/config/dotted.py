"""Dotted keys (`training.optimizer.name`) into the raw, nested dicts an experiment file reads as."""

from collections.abc import Iterator
from typing import Any


def get_dotted(raw: dict, key: str) -> Any:
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def set_dotted(raw: dict, key: str, value: Any) -> None:
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value


def dotted_keys(raw: dict, prefix: str = "") -> Iterator[str]:
    """Every leaf's dotted key."""
    for key, value in raw.items():
        if isinstance(value, dict):
            yield from dotted_keys(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
