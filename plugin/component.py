"""The base of every pluggable part (task, trainer, data set, query strategy).

Parameters are declared once with `param`, so the app renders forms, the CLI parses options
and MLflow logs params from the same declaration.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import param

from activelab.errors import InvalidConfigError

# Parameters every Parameterized has, or that the host sets itself: not user parameters.
_HOST_PARAMS = {"name"}


@dataclass(frozen=True)
class ParamSpec:
    """One declared parameter, in the plain terms a form or a CLI needs."""

    name: str
    type: str  # "float" | "int" | "bool" | "str" | "choice" | "list" | "dict"
    default: Any
    doc: str
    bounds: tuple[Any, Any] | None = None
    choices: tuple[Any, ...] | None = None
    allow_none: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": self.default,
            "doc": self.doc,
            "bounds": list(self.bounds) if self.bounds else None,
            "choices": list(self.choices) if self.choices else None,
            "allow_none": self.allow_none,
        }


def _type_of(p: param.Parameter) -> str:
    if isinstance(p, param.Boolean):
        return "bool"
    if isinstance(p, param.Integer):
        return "int"
    if isinstance(p, param.Number):
        return "float"
    if isinstance(p, param.Selector):
        return "choice"
    if isinstance(p, (param.List, param.Tuple)):
        return "list"
    if isinstance(p, param.Dict):
        return "dict"
    return "str"


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use true or false)")


class Component(param.Parameterized):
    """A pluggable part with a registry key (`kind`) and declared parameters."""

    kind: ClassVar[str] = ""
    if TYPE_CHECKING:
        name: str  # param's own `name`; the host always sets it (a task's name, else the kind)
    # Parameters handled by the host (e.g. a task's weight) rather than listed as the part's own.
    common_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def summary(cls) -> str:
        """The class docstring's first paragraph, as one line (a summary may wrap over
        several lines of source: cutting at the first line ended sentences mid-way)."""
        doc = inspect.cleandoc(cls.__doc__ or "")
        return " ".join(doc.split("\n\n", 1)[0].split())

    @classmethod
    def param_specs(cls, include_common: bool = False) -> list[ParamSpec]:
        """The declared parameters, in declaration order."""
        specs = []
        for pname, p in cls.param.objects("existing").items():
            if pname in _HOST_PARAMS or (pname in cls.common_params and not include_common):
                continue
            if p.precedence is not None and p.precedence < 0:
                continue
            bounds = getattr(p, "bounds", None)
            objects = getattr(p, "objects", None)
            specs.append(
                ParamSpec(
                    name=pname,
                    type=_type_of(p),
                    default=p.default,
                    doc=(p.doc or "").strip(),
                    bounds=tuple(bounds) if bounds else None,
                    choices=tuple(objects) if objects else None,
                    allow_none=bool(p.allow_None),
                )
            )
        return specs

    @classmethod
    def parse_value(cls, pname: str, raw: Any) -> Any:
        """Turn `raw` (a CLI string or a JSON value) into the parameter's declared type."""
        p = cls.param.objects("existing").get(pname)
        if p is None or pname in _HOST_PARAMS:
            known = ", ".join(s.name for s in cls.param_specs(include_common=True)) or "none"
            raise InvalidConfigError(
                f"{cls.kind!r} has no parameter {pname!r}; its parameters are: {known}."
            )
        if not isinstance(raw, str):
            value = raw
        elif raw.strip().lower() in ("none", "null") and p.allow_None:
            value = None
        else:
            try:
                kind = _type_of(p)
                if kind == "bool":
                    value = _parse_bool(raw)
                elif kind == "int":
                    value = int(raw)
                elif kind == "float":
                    value = float(raw)
                elif kind in ("list", "dict"):
                    value = json.loads(raw) if raw.strip()[:1] in "[{" else _split_list(raw)
                elif kind == "choice":
                    value = _match_choice(raw, p.objects)
                else:
                    value = raw
            except (ValueError, json.JSONDecodeError) as exc:
                raise InvalidConfigError(
                    f"{cls.kind} parameter {pname!r}: {exc}. Expected a {_type_of(p)} value."
                ) from None
        cls.check_value(pname, value)
        return value

    @classmethod
    def check_value(cls, pname: str, value: Any) -> None:
        """Raise InvalidConfigError if `value` breaks the parameter's declaration."""
        p = cls.param.objects("existing")[pname]
        try:
            p._validate(value)
        except (ValueError, TypeError) as exc:
            raise InvalidConfigError(f"{cls.kind} parameter {pname!r}: {_plain(exc)}") from None
        numbers = value if isinstance(value, (list, tuple)) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in numbers):
            raise InvalidConfigError(
                f"{cls.kind} parameter {pname!r}: {value!r} is not a finite number."
            )

    @classmethod
    def validate_params(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Check every value against its declaration; returns the values, parsed."""
        return {k: cls.parse_value(k, v) for k, v in values.items()}

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {s.name: s.default for s in cls.param_specs()}

    def values(self) -> dict[str, Any]:
        """This instance's own parameter values (not the host's common ones)."""
        return {s.name: getattr(self, s.name) for s in self.param_specs()}


def _split_list(raw: str) -> list[Any]:
    items = [item.strip() for item in raw.split(",") if item.strip()]
    parsed: list[Any] = []
    for item in items:
        try:
            parsed.append(json.loads(item))
        except json.JSONDecodeError:
            parsed.append(item)
    return parsed


def _match_choice(raw: str, objects: Any) -> Any:
    choices = list(objects.values()) if isinstance(objects, dict) else list(objects)
    for choice in choices:
        if str(choice) == raw:
            return choice
    raise ValueError(f"{raw!r} is not one of {', '.join(map(str, choices))}")


def _plain(exc: Exception) -> str:
    """param's messages name the owning class with a long repr; keep the useful part."""
    text = str(exc)
    if " parameter " in text:
        text = text.split(" parameter ", 1)[1]
        text = re.sub(r"^'[^']*' ", "", text)
    return text
