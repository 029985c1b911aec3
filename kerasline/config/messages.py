"""A pydantic error → one line: the dotted key, what is wrong, and a close match where one exists."""

import difflib
import re
import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel

from kerasline.config.families import MODEL_CONFIGS


def _describe(error: dict, root: type[BaseModel]) -> str:
    """One line for one pydantic error: the dotted key, what is wrong, and a close match. `root` is the config
    class the error's location starts from (the experiment's)."""
    loc = [str(p) for p in error["loc"]]
    # A key that is the user's own text prints as its repr where it holds a control character: "0\r0" would
    # otherwise break the one line in two.
    key = ".".join(part if part.isprintable() else repr(part) for part in _without_tags(loc))
    try:
        if error["type"] == "extra_forbidden":
            known = list(_model_at(root, loc[:-1]).model_fields)
            return f"{key}: unknown key{did_you_mean(loc[-1], known)}"
        if error["type"] == "literal_error":
            field = _model_at(root, loc[:-1]).model_fields[loc[-1]]
            allowed = [str(a) for a in typing.get_args(_strip_optional(field.annotation))]
            got = str(error["input"])
            return f"{key}: {got!r} is not one of {', '.join(allowed)}{did_you_mean(got, allowed)}"
    except (KeyError, AttributeError, TypeError):  # a location the schema walk cannot follow: no suggestion
        pass
    if error["type"] == "union_tag_invalid":  # model.name, or a tune.space entry's type
        ctx = error["ctx"]
        allowed, tag = re.findall(r"'([^']*)'", ctx["expected_tags"]), str(ctx["tag"])
        field = ctx["discriminator"].strip("'")
        return f"{key}.{field}: {tag!r} is not one of {', '.join(allowed)}{did_you_mean(tag, allowed)}"
    if error["type"] == "value_error":  # our own checks: their message names the keys
        message = str(error["ctx"]["error"])
        return f"{key}: {message}" if loc and not message.startswith(f"{key}.") else message
    got = repr(error["input"])
    return f"{key}: {error['msg'].lower()} (got {got if len(got) <= 60 else got[:57] + '...'})"


SPACE_TAGS = {"float", "int", "choice", "bool"}


def _without_tags(loc: list[str]) -> list[str]:
    """pydantic puts the chosen member of a tagged union in the location (model.mlp.dropout): drop it."""
    return [
        part
        for i, part in enumerate(loc)
        if not (i >= 1 and loc[i - 1] == "model" and part in MODEL_CONFIGS)
        and not (i >= 3 and loc[i - 3 : i - 1] == ["tune", "space"] and part in SPACE_TAGS)
    ]


def did_you_mean(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _model_at(root: type[BaseModel], loc: list[str]) -> type[BaseModel]:
    """The config class at a location; at the model union, the next part of the location names the member."""
    node, parts = root, iter(loc)
    for part in parts:
        node = _strip_optional(node.model_fields[part].annotation)
        if typing.get_origin(node) in (typing.Union, types.UnionType):
            node = MODEL_CONFIGS[next(parts)]
    return node


def _strip_optional(annotation: Any) -> Any:
    if typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return annotation
