"""Re-rankers by name: registering one, listing them, and reading the steps a user asked for.

**The door for a new re-ranker is one file**: a module ``retrieval/search/rerank/<name>.py``
defining a :class:`~retrieval.search.rerank.step.Reranker` subclass decorated with
:func:`register_reranker` and ``name = "<name>"``. The registry finds the package's modules by
their file names (:func:`reranker_names` imports nothing, so ``--help`` stays quick) and imports a
module the first time its name is asked for; a re-ranker defined anywhere else (a user's script,
a test) is reachable once its class is registered. The CLI (``--rerank``), the API (``rerank``
field) and the evaluation all go through :func:`parse_steps`.

The written form of a list of steps, in order::

    qe                       one step with its defaults
    qe:k=2:alpha=3,coseg:K=20:k=3
                             steps separated by ``,``; a step's parameters by ``:``, as key=value

Values are converted to the type of the parameter's field (int, float, bool: 1/0/true/false/yes/
no, str); an unknown name or parameter, or a bad value, is a one-line :class:`DataError` that
names the valid ones.
"""
from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import typing
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence, Type, Union

from retrieval.core.errors import DataError, did_you_mean
from retrieval.search.rerank.step import Reranker

#: Modules of the package that are not re-rankers.
_NOT_STEPS = {"step", "registry"}
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_REGISTERED: Dict[str, Type[Reranker]] = {}

StepsLike = Union[None, str, Reranker, Sequence[Union[str, Reranker]]]


def register_reranker(cls: Type[Reranker]) -> Type[Reranker]:
    """Class decorator: make ``cls`` reachable by ``cls.name`` everywhere a query is made."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a re-ranker's name must be a lowercase identifier, got {name!r}")
    if not (isinstance(cls, type) and issubclass(cls, Reranker)):
        raise TypeError(f"{cls!r} is not a Reranker subclass")
    if not dataclasses.is_dataclass(cls.Params):
        raise TypeError(f"{cls.__name__}.Params must be a dataclass")
    _REGISTERED[name] = cls
    return cls


def unregister_reranker(name: str) -> None:
    """Forget the re-ranker ``name`` (tests register toy ones and remove them afterwards)."""
    _REGISTERED.pop(name, None)


def _module_names() -> List[str]:
    here = Path(__file__).resolve().parent
    return [m.name for m in pkgutil.iter_modules([str(here)]) if m.name not in _NOT_STEPS and not m.name.startswith("_")]


def reranker_names() -> List[str]:
    """Every re-ranker name: the package's modules and the classes registered from elsewhere
    (sorted; nothing is imported)."""
    return sorted(set(_module_names()) | set(_REGISTERED))


def reranker_class(name: str) -> Type[Reranker]:
    """The re-ranker registered as ``name`` (its module imported on first use)."""
    if name not in _REGISTERED and name in _module_names():
        importlib.import_module(f"{__package__}.{name}")
    if name not in _REGISTERED:
        raise DataError(f"unknown re-ranker '{name}'{did_you_mean(name, reranker_names())}; "
                        f"choose from: {', '.join(reranker_names())}")
    return _REGISTERED[name]


def _field_types(params_cls: Type[Any]) -> Dict[str, Any]:
    hints = typing.get_type_hints(params_cls)
    return {f.name: hints.get(f.name, str) for f in dataclasses.fields(params_cls)}


def _scalar(tp: Any) -> Any:
    """int / float / bool / str of an annotation (``Optional[X]`` → X), None when not settable."""
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Union and len(args) == 1:
        tp = args[0]
    return tp if tp in (int, float, bool, str) else None


def _convert(step: str, key: str, text: str, tp: Any) -> Any:
    kind = _scalar(tp)
    try:
        if kind is bool:
            low = text.strip().lower()
            if low not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return low in ("1", "true", "yes", "on")
        if kind is int:
            return int(text)
        if kind is float:
            v = float(text)
            if v != v or v in (float("inf"), float("-inf")):
                raise ValueError(text)
            return v
        return text
    except ValueError:
        raise DataError(f"re-ranker '{step}': {key}={text!r} is not a valid {kind.__name__}") from None


def parameters(name: str) -> Dict[str, Any]:
    """``{parameter: default}`` of the re-ranker ``name`` (the settable, scalar ones)."""
    cls = reranker_class(name)
    types = _field_types(cls.Params)
    defaults = cls.Params()
    return {k: getattr(defaults, k) for k, tp in types.items() if _scalar(tp) is not None}


def make_step(name: str, values: Dict[str, str]) -> Reranker:
    """The step ``name`` with parameters given as text (``{"k": "2"}``), converted by field type."""
    cls = reranker_class(name)
    types = _field_types(cls.Params)
    settable = [k for k, tp in types.items() if _scalar(tp) is not None]
    kwargs = {}
    for key, text in values.items():
        if key not in settable:
            raise DataError(f"re-ranker '{name}' has no parameter '{key}'{did_you_mean(key, settable)}; "
                            f"its parameters: {', '.join(settable) or 'none'}")
        kwargs[key] = _convert(name, key, text, types[key])
    return cls(**kwargs)


def parse_step(text: str) -> Reranker:
    """One step written as ``name`` or ``name:key=value[:key=value...]``."""
    name, *pairs = [s.strip() for s in text.strip().split(":")]
    values: Dict[str, str] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or not key.strip():
            raise DataError(f"re-ranker '{name}': parameter '{pair}' is not key=value (e.g. {name}:k=2)")
        values[key.strip()] = value.strip()
    return make_step(name, values)


def parse_steps(steps: StepsLike) -> List[Reranker]:
    """The steps of ``steps``: ``None`` or ``""`` (none), a written list (module docstring), a
    step, or a sequence of written lists and steps (concatenated in order)."""
    if steps is None:
        return []
    if isinstance(steps, (str, Reranker)):
        steps = [steps]
    out: List[Reranker] = []
    for item in steps:
        if isinstance(item, Reranker):
            out.append(item)
        elif isinstance(item, str):
            out.extend(parse_step(s) for s in item.split(",") if s.strip())
        else:
            raise DataError(f"a re-ranking step is a name or a Reranker, got {type(item).__name__}")
    return out


def describe_rerankers(names: Iterable[str] = ()) -> str:
    """Lines ``name  summary`` for ``--help`` (importing the modules; ``names``: default all)."""
    lines = []
    for n in list(names) or reranker_names():
        cls = reranker_class(n)
        params = ", ".join(f"{k}={v}" for k, v in parameters(n).items())
        lines.append(f"{n}: {cls.summary}" + (f" ({params})" if params else ""))
    return "\n".join(lines)
