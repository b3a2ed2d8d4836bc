"""Reading JSON Lines: one JSON value per line, blank lines ignored, `.gz` files unpacked."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterable


def parse_jsonl(lines: str | Iterable[str], *, skip_broken: bool = False) -> list[Any]:
    """The values of JSON Lines given as text or as lines. A line that is not JSON raises
    json.JSONDecodeError, or with `skip_broken` is left out (a line cut by an interrupted
    write). Text is split at newlines only: U+2028 and the like may stand inside a JSON string."""
    if isinstance(lines, str):
        lines = lines.split("\n")
    rows = []
    for line in lines:
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if not skip_broken:
                raise
    return rows


def read_jsonl(path: Path, *, skip_broken: bool = False) -> list[Any]:
    """The values of a JSON Lines file (gzip-compressed when its name ends in .gz)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        return parse_jsonl(fh, skip_broken=skip_broken)
