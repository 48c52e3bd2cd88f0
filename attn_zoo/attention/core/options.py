"""Typed option declarations: a variant declares its options once, as a frozen dataclass.

    @dataclasses.dataclass(frozen=True)
    class Options:
        window: int = option(128, "keys on each side of a query (causal: before it)", min=0)
        engine: str = option("auto", "'auto': the fused CPU kernel for fp32 on CPU", choices=ENGINES)

        def check(self):  # optional: constraints between options; raise ValueError
            ...

From that one declaration the registry derives the defaults, the unknown-name error, the type and
range errors (the same check runs when a config is loaded and on every `spec.apply`), and the
option table that `attn-zoo list NAME` prints. Types: int, float, bool, str, tuple[int, ...]
(and tuple[str, ...]); an int is accepted for a float, nothing else is converted.
"""
from __future__ import annotations

import ast
import dataclasses
import typing
from typing import Any, Callable, Mapping

ENGINES = ("auto", "xla")
ENGINE_DOC = "'auto': the fused C++ kernel for fp32 on CPU, else the XLA engine; 'xla': always XLA"


def option(default, doc: str, *, min=None, max=None, gt=None, choices=None) -> Any:
    """A dataclass field with a one-line doc and its valid range (min <= x <= max, x > gt, or one
    of `choices`)."""
    meta = dict(doc=doc, min=min, max=max, gt=gt, choices=None if choices is None else tuple(choices))
    return dataclasses.field(default=default, metadata=meta)


@dataclasses.dataclass(frozen=True)
class Field:
    """One declared option, as the registry reads it."""

    name: str
    type: Any
    default: Any
    doc: str = ""
    min: Any = None
    max: Any = None
    gt: Any = None
    choices: tuple | None = None

    def allowed(self) -> str:
        """What values are allowed, in words: 'int >= 0', "one of 'auto', 'xla'", 'bool'."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        bounds = [f">= {self.min}" if self.min is not None else "",
                  f"> {self.gt}" if self.gt is not None else "",
                  f"<= {self.max}" if self.max is not None else ""]
        return " ".join([_type_name(self.type), *filter(None, bounds)])

    def coerce(self, value):
        """`value` as this option's type, or TypeError/ValueError saying what is allowed."""
        value = _coerce(self.type, value)
        if value is _BAD:
            raise TypeError(self.allowed())
        if self.choices is not None and value not in self.choices:
            raise ValueError(self.allowed())
        if ((self.min is not None and value < self.min) or (self.max is not None and value > self.max)
                or (self.gt is not None and value <= self.gt)):
            raise ValueError(self.allowed())
        return value


_BAD = object()


def _type_name(tp) -> str:
    if typing.get_origin(tp) is tuple:
        return f"tuple of {_type_name(typing.get_args(tp)[0])}"
    return getattr(tp, "__name__", str(tp))


def _coerce(tp, value):
    if typing.get_origin(tp) is tuple:
        if not isinstance(value, (tuple, list)):
            return _BAD
        items = tuple(_coerce(typing.get_args(tp)[0], v) for v in value)
        return _BAD if any(i is _BAD for i in items) else items
    if tp is bool:
        return bool(value) if type(value).__name__ in ("bool", "bool_") else _BAD
    if tp is int:
        if isinstance(value, bool) or not hasattr(value, "__index__"):
            return _BAD
        return int(value.__index__())
    if tp is float:  # ints and numpy scalars too, never a bool or a string
        if isinstance(value, (bool, str)) or not hasattr(value, "__float__"):
            return _BAD
        return float(value)
    if tp is str:
        return value if isinstance(value, str) else _BAD
    return value  # an undeclared type (a plugin's `defaults=` of another kind): taken as given


class Declaration:
    """A variant's option declaration (a frozen dataclass type) as the registry uses it."""

    def __init__(self, cls):
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"options must be a dataclass type, got {cls!r}")
        hints = typing.get_type_hints(cls)
        self.cls = cls
        self.fields = {f.name: Field(f.name, hints[f.name], f.default, **dict(f.metadata))
                       for f in dataclasses.fields(cls)}

    @classmethod
    def from_defaults(cls, name: str, defaults: Mapping[str, Any]) -> "Declaration":
        """A declaration typed by the defaults' own types (for `register(..., defaults=dict)`)."""
        def typ(v):
            if isinstance(v, tuple):
                return tuple[type(v[0]), ...] if v else tuple[Any, ...]
            return type(v)
        fields = [(k, typ(v), dataclasses.field(default=v)) for k, v in defaults.items()]
        return cls(dataclasses.make_dataclass(f"{name}_options", fields, frozen=True))

    @property
    def defaults(self) -> dict[str, Any]:
        return {n: f.default for n, f in self.fields.items()}

    def resolve(self, where: str, options: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults overridden by `options`, each checked; raises with one line naming `where`
        (e.g. "attention 'local'"), the option, the value and what is allowed."""
        unknown = sorted(set(options) - set(self.fields))
        if unknown:
            known = ", ".join(sorted(self.fields)) or "none"
            raise TypeError(f"{where} has no option {unknown}; its options are: {known}")
        out = self.defaults
        for name, value in options.items():
            try:
                out[name] = self.fields[name].coerce(value)
            except (TypeError, ValueError) as e:
                raise type(e)(f"{where}: option {name}={value!r} is not allowed; "
                              f"{name} must be {e}") from None
        check: Callable | None = getattr(self.cls, "check", None)
        if check is not None:
            try:
                check(self.cls(**out))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
        return out

    def rows(self) -> list[dict[str, str]]:
        """One row per option: name, type, default, allowed, doc (what `attn-zoo list NAME` shows)."""
        return [{"option": f.name, "type": _type_name(f.type), "default": repr(f.default),
                 "allowed": f.allowed(), "doc": f.doc} for f in self.fields.values()]


def parse_literal(text: str, *, strict: bool = False):
    """The one parser of option literals (configs, the CLI, mixture groups): a Python literal
    ('3', '0.5', "'x'", '(0, 9)', 'True'), else the text itself as a string. strict: only a bare
    word (an identifier, e.g. layout=strided) may stand for a string; other text raises ValueError."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if strict and not text.strip().isidentifier():
            raise ValueError(f"{text!r} is neither a Python literal nor a bare word") from None
        return text.strip() if strict else text
