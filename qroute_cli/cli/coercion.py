"""Command-line values converted without loading pydantic, where plain Python gives typer's value.

typer 0.26 and later converts every parameter's value, defaults included, through a pydantic
TypeAdapter it builds on first use. Importing pydantic and building a dozen adapters is paid by
every one-shot `qroute run`, and shell loops call qroute once per prompt. The values a command
line mostly carries (none, a string, a plain integer or decimal within the option's bounds) come
out of pydantic exactly as plain Python makes them, so they are converted here; every other
value, out-of-bounds ones included, goes to typer's own converter, built when first needed, so
its messages and edge cases stay typer's. Older typer converts through click types and is left
alone (its parameters have no `_runtime_param`). tests/test_startup_imports.py checks both
converters against each other on every parameter of every command.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

# Integers and decimals as both Python and pydantic read them alike: no sign but '-', no
# leading zeros, underscores, spaces or exponents, and few enough digits to be exact.
_INT = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")
_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]{0,14})(?:\.[0-9]{1,15})?")

TYPERS = object()  # plain_value's answer when typer's own converter must decide

# A Path option's flags as typer.Option leaves them: then typer checks only that an existing
# file is readable (`readable`, on by default, is checked in _plain_path).
_PLAIN_PATH = {"exists": False, "file_okay": True, "dir_okay": True, "writable": False, "resolve_path": False,
               "allow_dash": False, "path_type": None}


def quick_coercion(command) -> None:
    """Give each typer parameter of `command` and of its subcommands the quick converter."""
    for param in getattr(command, "params", ()):
        _give(param)
    help_option = getattr(command, "get_help_option", None)
    if help_option is not None:  # --help is made when a command line is parsed: converted as it is made
        command.get_help_option = lambda ctx: _give(help_option(ctx))
    for sub in (getattr(command, "commands", None) or {}).values():
        quick_coercion(sub)


def _give(param):
    """`param`, with the quick converter where typer would build a pydantic one."""
    if hasattr(param, "type_descriptor") and hasattr(param, "get_runtime_param") \
            and getattr(param, "_runtime_param", False) is None:
        param._runtime_param = QuickConverter(param.type_descriptor)
    return param


class QuickConverter:
    """One parameter's converter: plain values here, anything else through typer's own."""

    def __init__(self, descriptor) -> None:
        self.descriptor = descriptor

    def coerce(self, value: Any, param, ctx) -> Any:
        multi = param.multiple or param.nargs == -1
        if value is None:
            return () if multi else None  # as typer's converter answers for a missing value
        if not multi:
            plain = plain_value(self.descriptor.annotation, self.descriptor.parameter_info, value)
            if plain is not TYPERS:
                return plain
        param._runtime_param = None  # typer builds its own converter, which serves from now on
        return param.get_runtime_param().coerce(value, param=param, ctx=ctx)


def plain_value(annotation: Any, info, value: Any) -> Any:
    """`value` converted for a parameter of type `annotation`, or TYPERS where typer must decide."""
    if getattr(info, "parser", None) is not None or getattr(info, "click_type", None) is not None:
        return TYPERS
    if annotation is str:
        return value if type(value) is str else TYPERS
    if annotation is Path:
        return _plain_path(info, value)
    if annotation is int:
        if type(value) is str and _INT.fullmatch(value):
            value = int(value)
        if type(value) is not int:
            return TYPERS
    elif annotation is float:
        if type(value) is str and _DECIMAL.fullmatch(value):
            value = float(value)
        if type(value) is not float or not math.isfinite(value):
            return TYPERS
    else:
        return TYPERS
    if getattr(info, "clamp", False):
        return TYPERS
    low, high = getattr(info, "min", None), getattr(info, "max", None)
    if (low is not None and value < low) or (high is not None and value > high):
        return TYPERS  # typer's message says what the bounds are
    return value


def _plain_path(info, value: Any) -> Any:
    """A Path option's value, or TYPERS where typer checks more than that a file is readable."""
    if type(value) is not str or not value or "\0" in value \
            or any(getattr(info, flag, None) != want for flag, want in _PLAIN_PATH.items()):
        return TYPERS
    path = Path(value)
    if getattr(info, "readable", True) and os.path.exists(path) and not os.access(path, os.R_OK):
        return TYPERS  # typer's message says it is not readable
    return path
