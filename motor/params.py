"""Notebook parameters: coerce and validate what papermill passes, in a notebook's first code cell.

``papermill -p name value`` passes ``value`` as a string unless it looks like an int, a float, ``True``/``False`` or
``None`` (so ``-p fast false`` arrives as the string ``"false"``, ``-p modalities text`` as ``"text"``); ``-y``/``-f``
pass YAML-typed values. :func:`notebook_params` turns them into the types the notebook declares, writes them back
into the notebook's namespace, and fails on the first bad value with a message that names the parameter, the value
and what is allowed::

    import motor
    from motor.params import DATASET, notebook_params, one_of
    notebook_params(globals(), {
        "dataset": DATASET,                       # None: scientific if present, else synthetic (one line says so)
        "backbone": one_of("bpr", "lightgcn"),    # one of these strings
        "item_reprs": list[one_of("id", "ms", "ma")],  # "id,ms", "[id, ms]" (YAML) or a list
        "modalities": list[str] | None,           # "text" -> ["text"]; "None"/"null" -> None
        "seeds": list[int],                       # "0,1,2", 1 -> [1]
        "epochs": int, "lr": float,
        "fast": bool | None,                      # true/false/True/False/1/0/yes/no/on/off
        "hparams": dict,                          # '{"n_layers": 2}' (JSON or YAML)
    })

Spec values: ``int``, ``float``, ``str``, ``bool``, ``dict``, ``list[T]``, ``T | None``, :func:`one_of` (``Literal``)
and :data:`DATASET`. Every name in the spec must be defined (the parameters cell defines them); a parameter papermill
injected that the spec does not name is an error, so a typo (``-p datset x``) does not silently run the default.
"""
from __future__ import annotations

import json
import os
import types
import typing
from typing import Any, Literal, Mapping, MutableMapping

import yaml

from .data import resolve_dataset_name

_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}
_NONE = {"none", "null", "~", ""}
# names every IPython kernel defines; they are not parameters
_KERNEL_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}


class ParameterError(ValueError):
    """A notebook parameter has a value of the wrong type or outside its allowed values."""


class _DatasetName:
    """Spec marker: a dataset name resolved by :func:`motor.data.resolve_dataset_name` (None = default)."""

    def __repr__(self) -> str:
        return "DATASET"


DATASET = _DatasetName()


def one_of(*values: Any) -> Any:
    """Spec for a value restricted to ``values`` (``Literal[values]``); usable inside ``list[...]``."""
    if len(values) == 1 and isinstance(values[0], (list, tuple)):
        values = tuple(values[0])
    return Literal[values]


def notebook_params(namespace: MutableMapping[str, Any], spec: Mapping[str, Any], *,
                    check_unknown: bool = True) -> dict[str, Any]:
    """Coerce ``namespace[name]`` to ``spec[name]`` for every name in ``spec``, write the results back into
    ``namespace`` and return them as a dict.

    ``namespace`` is the notebook's ``globals()`` (or any dict of raw values). With ``check_unknown``, any other
    plain value in it (not a module, function, class, kernel name or ``_private`` name) is reported as an unknown
    parameter: call this first in the cell after the parameters cell, before defining other variables.
    Raises :class:`ParameterError` naming the parameter, its value and the allowed values.
    """
    missing = [name for name in spec if name not in namespace]
    if missing:
        raise ParameterError(f"parameters {missing} are declared in the spec but not defined; define them in the "
                             "notebook's parameters cell")
    if check_unknown:
        unknown = sorted(name for name, value in namespace.items()
                         if name not in spec and _looks_like_param(name, value))
        if unknown:
            raise ParameterError(f"unknown parameter(s) {unknown}; this notebook takes: {', '.join(spec)}")
    out = {name: coerce(namespace[name], kind, name) for name, kind in spec.items()}
    namespace.update(out)
    return out


def _looks_like_param(name: str, value: Any) -> bool:
    if name.startswith("_") or name in _KERNEL_NAMES:
        return False
    return not (isinstance(value, (types.ModuleType, type, _DatasetName)) or callable(value))


def coerce(value: Any, kind: Any, name: str = "value") -> Any:
    """``value`` converted to ``kind`` (see the module docstring), or :class:`ParameterError`."""
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        others = [a for a in args if a is not type(None)]
        if len(others) < len(args) and _is_none(value):
            return None
        if len(others) != 1:
            raise TypeError(f"spec of {name!r}: only 'T | None' unions are supported, got {kind}")
        return coerce(value, others[0], name)
    if kind is DATASET:
        return resolve_dataset_name(None if _is_none(value) else str(value))
    if origin is Literal:
        return _choice(value, args, name)
    if origin is list or kind is list:
        item_kind = args[0] if args else str
        return [coerce(v, item_kind, f"{name}[{i}]") for i, v in enumerate(_as_list(value, name))]
    if kind is dict or origin is dict:
        return _as_dict(value, name)
    if kind is bool:
        return to_bool(value, name)
    if kind is int:
        return _as_int(value, name)
    if kind is float:
        return _as_float(value, name)
    if kind is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ParameterError(f"parameter {name!r} must be a string, got {value!r}")
    if kind is Any:
        return value
    raise TypeError(f"spec of {name!r}: unsupported kind {kind!r}")


def to_bool(value: Any, name: str = "value") -> bool:
    """True/False from a bool, 0/1, or the strings true/false/yes/no/on/off/1/0 (any case)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
    raise ParameterError(f"parameter {name!r} must be a boolean (true/false, True/False, 1/0, yes/no), got {value!r}")


def _is_none(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in _NONE)


def _choice(value: Any, allowed: tuple, name: str) -> Any:
    for a in allowed:  # compare in the type of the allowed value ("4" matches 4, "true" matches True)
        try:
            if coerce(value, type(a), name) == a:
                return a
        except ParameterError:
            continue
    raise ParameterError(f"parameter {name!r} must be one of {list(allowed)}, got {value!r}")


def _parse_text(value: str, name: str) -> Any:
    """JSON, else YAML (papermill's own -y format); ParameterError when neither parses."""
    try:
        return json.loads(value)
    except ValueError:
        pass
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError as e:
        raise ParameterError(f"parameter {name!r}: could not parse {value!r} as JSON or YAML ({e})") from None


def _as_list(value: Any, name: str) -> list:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            parsed = _parse_text(text, name)
            if not isinstance(parsed, list):
                raise ParameterError(f"parameter {name!r} must be a list, got {value!r}")
            return parsed
        return [part.strip() for part in text.split(",") if part.strip()]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]  # papermill turns "-p seeds 1" into the int 1
    raise ParameterError(f"parameter {name!r} must be a list (a,b,c or [a, b, c]), got {value!r}")


def _as_dict(value: Any, name: str) -> dict:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        if _is_none(value):
            return {}
        parsed = _parse_text(value, name)
        if isinstance(parsed, dict):
            return parsed
    if value is None:
        return {}
    raise ParameterError(f"parameter {name!r} must be a mapping such as '{{\"n_layers\": 2}}', got {value!r}")


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise ParameterError(f"parameter {name!r} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ParameterError(f"parameter {name!r} must be an integer, got {value!r}")


def _as_float(value: Any, name: str) -> float:
    if isinstance(value, bool):
        raise ParameterError(f"parameter {name!r} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            pass
    raise ParameterError(f"parameter {name!r} must be a number, got {value!r}")


def fast_mode(value: bool | None = None) -> bool:
    """Notebook ``fast`` flag: an explicit value wins, else ``$MOTOR_FAST`` (CI sets it to 1)."""
    if value is not None:
        return to_bool(value, "fast")  # papermill passes "-p fast false" as the string "false"
    return os.environ.get("MOTOR_FAST", "0").lower() in ("1", "true", "yes")
