"""Reading Hugging Face ``config.json`` dictionaries into plain dataclasses."""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Mapping
from typing import Any, TypeVar

from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models._module import SUPPORTED_ACTIVATIONS

__all__ = ["check_activation", "from_dict", "label_count", "require_model_type"]

T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any], *, context: str) -> T:
    """An instance of the dataclass ``cls`` from a config dictionary.

    Keys the dataclass does not know are ignored (configs carry training settings the forward
    pass never reads); fields missing from ``data`` keep their defaults, which are the
    Hugging Face defaults. A value of the wrong type raises CheckpointError naming the key.
    """
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name not in data or data[f.name] is None:
            continue
        value = data[f.name]
        expected = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if expected in ("int", "float") and (
            isinstance(value, bool) or not isinstance(value, numbers.Real)
        ):
            raise CheckpointError(f"{context}: config value {f.name}={value!r} is not a number")
        if expected == "int":
            if isinstance(value, float) and not value.is_integer():
                raise CheckpointError(
                    f"{context}: config value {f.name}={value!r} is not an integer"
                )
            value = int(value)
        elif expected == "float":
            value = float(value)
        values[f.name] = value
    return cls(**values)


def require_model_type(config: Mapping[str, Any], wanted: tuple[str, ...], context: str) -> str:
    """The config's ``model_type``, or UnsupportedArchitectureError when it is not in ``wanted``."""
    model_type = str(config.get("model_type", "")).lower()
    if model_type not in wanted:
        arch = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise UnsupportedArchitectureError(
            f"{context}: config.json describes model_type {model_type or '(missing)'!r} ({arch}); "
            f"this needs one of: {', '.join(wanted)}"
        )
    return model_type


def check_activation(name: str, context: str) -> str:
    if name not in SUPPORTED_ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"{context}: activation {name!r} is not implemented;"
            f" supported: {', '.join(sorted(SUPPORTED_ACTIVATIONS))}"
        )
    return name


def label_count(data: Mapping[str, Any], context: str) -> int:
    """The label count of a classifier config as transformers reads it: ``id2label``'s length
    when the config has one, else ``num_labels``, else 2; they must agree when both are set."""
    id2label = data.get("id2label")
    count = data.get("num_labels")
    if count is not None and (
        isinstance(count, bool) or not isinstance(count, int) or count < 1
    ):
        raise CheckpointError(f"{context}: num_labels must be a positive integer, got {count!r}")
    if id2label is not None:
        if not isinstance(id2label, dict) or not id2label:
            raise CheckpointError(
                f"{context}: id2label must be a non-empty object, got {id2label!r}"
            )
        if count is not None and count != len(id2label):
            raise CheckpointError(
                f"{context}: num_labels {count} disagrees with the {len(id2label)} labels "
                "of id2label"
            )
        return len(id2label)
    return 2 if count is None else int(count)
