"""Command-line values converted without pydantic when that is trivial.

typer (0.29, pinned) converts every parameter of the invoked command through a pydantic ``TypeAdapter``
it builds on first use (``typer._coercion.build_runtime_param``): importing pydantic, pydantic-core and
annotated-types and generating the adapters' schemas is ~40 files and a quarter of the CPU a ``cbr``
command spends before its first request (bench/README.md, realtree, "The `cbr` process itself"). Our
parameters are plain ``str``, ``bool``, ``int``, ``float`` and ``list[str]``, and their values arrive
as ``str``, ``bool``, ``None`` or tuples of ``str``.

:class:`QuickRuntimeParam` returns what typer's adapter would return for the values whose conversion
is the identity or ``int()``/``float()`` of a plain decimal; anything else (a bad number, another
annotation, a custom parser, files, bounds) goes to typer's own conversion, built on first need, so
its results and error messages are typer's. ``tests/cli/test_coercion.py`` compares both on the cases
taken here.
"""

from __future__ import annotations

import re
from typing import Any, get_args, get_origin

import typer.core
from typer._coercion import RuntimeParam, TypeDescriptor, build_runtime_param

_UNDECIDED = object()
_DECIMAL_INT = re.compile(r"-?[0-9]+")
_DECIMAL_FLOAT = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def quick_value(descriptor: TypeDescriptor, value: Any) -> Any:
    """``value`` converted as typer's adapter would for ``descriptor``, or ``_UNDECIDED`` (not trivial)."""
    info = descriptor.parameter_info
    if (descriptor.file_annotation is not None or info.parser is not None or info.min is not None
            or info.max is not None or info.clamp):
        return _UNDECIDED
    annotation = descriptor.annotation
    if get_origin(annotation) is list and get_args(annotation) == (str,):
        if isinstance(value, (list, tuple)) and all(type(item) is str for item in value):
            return list(value)
        return _UNDECIDED
    return _leaf(annotation, value)


def _leaf(annotation: Any, value: Any) -> Any:
    if annotation is str and type(value) is str:
        return value
    if annotation is bool and type(value) is bool:
        return value
    if annotation is int:
        if type(value) is int:
            return value
        if type(value) is str and _DECIMAL_INT.fullmatch(value):
            return int(value)
    if annotation is float:
        if type(value) is float:
            return value
        if type(value) is str and _DECIMAL_FLOAT.fullmatch(value):
            return float(value)
    return _UNDECIDED


class QuickRuntimeParam(RuntimeParam):
    """typer's runtime conversion of one parameter, its pydantic adapter built only when a value needs it."""

    def __init__(self, descriptor: TypeDescriptor):
        super().__init__(parameter_info=descriptor.parameter_info, annotation=descriptor.annotation)
        object.__setattr__(self, "descriptor", descriptor)  # (a frozen dataclass)
        object.__setattr__(self, "full", None)

    def _coerce_value(self, value: Any, param: typer.core._TyperParameter, ctx: Any) -> Any:
        quick = quick_value(self.descriptor, value)
        if quick is not _UNDECIDED:
            return quick
        if self.full is None:
            object.__setattr__(self, "full", build_runtime_param(self.descriptor))
        return self.full._coerce_value(value, param=param, ctx=ctx)


def _get_runtime_param(self: typer.core._TyperParameter) -> RuntimeParam:
    if self._runtime_param is None:
        self._runtime_param = QuickRuntimeParam(self.type_descriptor)
    return self._runtime_param


def install() -> None:
    """Every typer parameter converts through :class:`QuickRuntimeParam` (typer's ``get_runtime_param``
    builds the pydantic-backed one; ours wraps it)."""
    typer.core._TyperParameter.get_runtime_param = _get_runtime_param
