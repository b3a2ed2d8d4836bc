"""What users pipe or type in: stdin lines (plain prompts or JSON Lines) and text arguments.

Input is checked here, before it reaches a model, a terminal or a file: text that is not UTF-8
and a malformed JSON line become a `UsageError` that names the line. A bad line never ends a
batch: `read_prompts` yields it as an error in its place and reads on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import IO, Iterable, Iterator

from qroute_cli.errors import UsageError

# How stdin lines are read: "auto" takes a line that is a JSON object as a JSON Lines record
# and anything else as a plain prompt; "lines" and "jsonl" say which one every line is.
INPUT_MODES = ("auto", "lines", "jsonl")

_NOT_UTF8_HINT = "qroute reads UTF-8 text; convert the input, e.g. with: iconv -t UTF-8"


@dataclass(frozen=True)
class PromptLine:
    """One prompt read from stdin (`line` counts from 1), or the error its line gave."""

    line: int | None
    prompt: str = ""
    system: str | None = None
    error: UsageError | None = None


def check_text(text: str, what: str) -> str:
    """`text` unchanged, or a UsageError when it carries bytes that were not UTF-8.

    Python hands such bytes over as lone surrogates (in arguments, and on stdin in UTF-8
    mode); they would fail later, when the text is tokenized, logged or printed.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"{what} is not valid UTF-8.", _NOT_UTF8_HINT) from None
    return text


def input_mode(prompt: str | None, lines: bool, jsonl: bool) -> str:
    """The stdin mode that --lines / --jsonl ask for ("auto" without either; see INPUT_MODES)."""
    if lines and jsonl:
        raise UsageError("Choose one of --lines and --jsonl.")
    if (lines or jsonl) and prompt is not None:
        raise UsageError("--lines and --jsonl say how to read stdin; they do not go with a prompt argument.")
    return "lines" if lines else "jsonl" if jsonl else "auto"


def text_lines(stream: IO | Iterable) -> Iterator[str | UsageError]:
    """Each line of `stream` without its line end, decoded as UTF-8 line by line; a line that
    is not UTF-8 gives a UsageError in its place, and the lines after it are still read."""
    source = getattr(stream, "buffer", stream)  # sys.stdin: read bytes, decode per line
    for lineno, raw in enumerate(source, 1):
        where = f"stdin line {lineno}"
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield UsageError(f"{where} is not valid UTF-8 (byte {exc.start + 1}).", _NOT_UTF8_HINT)
                continue
        else:
            try:
                text = check_text(raw, where)
            except UsageError as exc:
                yield exc
                continue
        if lineno == 1:
            text = text.removeprefix("\ufeff")  # a byte-order mark some editors write
        yield text.rstrip("\r\n")


def read_prompts(stream: IO | Iterable, mode: str = "auto") -> Iterator[PromptLine]:
    """Prompts from stdin: one per line, or JSON Lines with a `prompt` (and optional `system`).

    In "auto" mode a line is a JSON record when it parses as a JSON object; a line that starts
    with `{"` but does not parse is reported as broken JSON, and any other line (even one that
    starts with `{`) is a plain prompt. Blank lines are skipped.
    """
    for lineno, text in enumerate(text_lines(stream), 1):
        if isinstance(text, UsageError):
            yield PromptLine(lineno, error=text)
            continue
        if not text.strip():
            continue
        if mode == "lines" or (mode == "auto" and not text.lstrip().startswith("{")):
            yield PromptLine(lineno, text)
            continue
        yield _json_prompt(lineno, text, strict=mode == "jsonl")


def _json_prompt(lineno: int, text: str, strict: bool) -> PromptLine:
    where = f"stdin line {lineno}"
    hint = ('A JSON line looks like {"prompt": "...", "system": "..."}; '
            "--lines reads every line as a plain prompt.")
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if strict or text.lstrip().startswith('{"'):
            return PromptLine(lineno, error=UsageError(f"{where}: invalid JSON ({exc.msg}).", hint))
        return PromptLine(lineno, text)  # auto: a plain prompt that happens to start with '{'
    if not isinstance(obj, dict):
        return PromptLine(lineno, error=UsageError(f"{where}: a JSON line must be an object.", hint))
    prompt, system = obj.get("prompt"), obj.get("system")
    if not isinstance(prompt, str) or not prompt.strip():
        return PromptLine(lineno, error=UsageError(f"{where}: a JSON line needs a non-empty string 'prompt' field.", hint))
    if system is not None and not isinstance(system, str):
        return PromptLine(lineno, error=UsageError(
            f"{where}: 'system' must be a string, got {type(system).__name__}.", hint))
    try:
        check_text(prompt, f"{where}: 'prompt'")
        if system is not None:
            check_text(system, f"{where}: 'system'")
    except UsageError as exc:
        return PromptLine(lineno, error=exc)
    return PromptLine(lineno, prompt, system or None)
