"""Command-line flags of the method table: one flag per method parameter, read back into the chosen
method's parameter dataclass. The scripts' argparse stops here; nothing below sees a namespace."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from lost.methods import METHODS
from lost.methods.entry import Method


def add_method_flags(parser: argparse.ArgumentParser) -> None:
    """One argparse flag per method parameter, from the fields' :func:`flag` metadata.

    Methods may share a flag (``--tau``) with defaults of their own: the flags default to None
    and :func:`params_from_args` fills in the chosen method's default.
    """
    group = parser.add_argument_group("method parameters (each applies to the methods named)")
    for name, (param, defaults) in _flag_declarations().items():
        options = {key: value for key, value in param.metadata.items() if key not in ("flag", "help")}
        if "action" not in options:
            options["type"] = type(param.default)
        help_text = f"{param.metadata['help']} (default: {', '.join(defaults)})"
        group.add_argument(name, dest=_dest(name), default=None, help=help_text, **options)


def _flag_declarations() -> dict[str, tuple[dataclasses.Field, list[str]]]:
    """Flag -> (its first declaring field, ``"<default> for <method>"`` of every method using it)."""
    declared: dict[str, tuple[dataclasses.Field, list[str]]] = {}
    for method in METHODS.values():
        for param in dataclasses.fields(method.params):
            entry = declared.setdefault(param.metadata["flag"], (param, []))
            entry[1].append(f"{param.name}={param.default} for {method.name}")
    return declared


def params_from_args(method: Method, args: argparse.Namespace) -> Any:
    """The method's parameter dataclass filled from the parsed flags (None: the method's default)."""
    values = {}
    for param in dataclasses.fields(method.params):
        given = getattr(args, _dest(param.metadata["flag"]))
        values[param.name] = param.default if given is None else given
    return method.params(**values)


def _dest(flag_name: str) -> str:
    return flag_name.lstrip("-")
