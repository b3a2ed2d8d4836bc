"""Where a chat writes: the streamed answer, its Markdown redraw on a terminal, status lines, tables.

The Markdown redraw moves the cursor back over the streamed answer with ANSI escapes
(`ESC[nF` up n rows, `ESC[J` clear below) and lets Rich draw it again; it is done only when
every row of the answer is still on the screen.
"""

from __future__ import annotations

import json
import math
import re
from typing import Callable

from qroute_cli.chat.history import History
from qroute_cli.errors import QrouteError
from qroute_cli.output import write_stdout

_MARKDOWN = re.compile(
    r"^```|^#{1,6} \S|^\s*[-*+] \S|^\s*\d+[.)] \S|\*\*\S.*?\*\*|`[^`\n]+`|\[[^\]\n]+\]\([^)\n]+\)|^\|.*\|\s*$",
    re.M,
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def looks_like_markdown(text: str) -> bool:
    """True when rendering `text` as Markdown would change how it looks."""
    return bool(_MARKDOWN.search(text))


def screen_rows(text: str, width: int) -> int:
    """Terminal rows `text` took when printed from column 0 and followed by one newline."""
    from rich.cells import cell_len

    if text.endswith("\n"):
        text = text[:-1]
    width = max(width, 1)
    return sum(max(1, math.ceil(cell_len(line.expandtabs(8)) / width)) for line in text.split("\n"))


class View:
    """Where a chat writes: answers to stdout (streamed), everything else to the error console.

    On a terminal (`markdown=True`) a finished answer that contains Markdown is redrawn with
    Rich in place of the streamed text, when all of it is still on the screen.
    """

    def __init__(self, out, err, *, write: Callable[[str], None] | None = None, markdown: bool = False,
                 status: bool = True, as_json: bool = False) -> None:
        self.out = out  # a Rich console on stdout
        self.err = err
        self._write_raw = write or write_stdout
        self.markdown = markdown
        self.show_status = status
        self.as_json = as_json
        self._streamed = ""

    def begin(self) -> None:
        self._streamed = ""

    def text(self, piece: str) -> None:
        """A piece of the answer, as it is generated."""
        if self.as_json:
            return
        if self.markdown:  # a model's control characters must not drive the terminal
            piece = _CONTROL.sub("", piece)
        self._streamed += piece
        self._write_raw(piece)

    def end(self, text: str) -> None:
        """The answer is complete: end its line, and redraw it as Markdown where that helps."""
        if self.as_json or not self._streamed:
            return
        if not self._streamed.endswith("\n"):
            self._write_raw("\n")
        if not (self.markdown and looks_like_markdown(text)):
            return
        width, height = self.out.size
        rows = screen_rows(self._streamed, width)
        if rows >= height - 1:
            return  # part of it scrolled away: leave the plain text
        from rich.markdown import Markdown

        self._write_raw(f"\x1b[{rows}F\x1b[J")  # up to the answer's first row, clear below
        self.out.print(Markdown(text))

    def status(self, line: str) -> None:
        if self.show_status:
            self.err.print(line, style="dim", highlight=False, soft_wrap=True)

    def notice(self, text: str) -> None:
        from rich.text import Text

        self.err.print(Text(text, style="yellow"), highlight=False, soft_wrap=True)  # paths may hold [brackets]

    def info(self, renderable) -> None:
        """Output the user asked for (a command's answer): shown even with -q."""
        self.err.print(renderable, highlight=False)

    def error(self, exc: QrouteError) -> None:
        from qroute_cli.render import print_error

        print_error(self.err, exc)

    def json_line(self, obj: dict) -> None:
        self._write_raw(json.dumps(obj, ensure_ascii=False) + "\n")


def turns_table(history: History):
    """/stats: one row per turn (the last 20) with speed, TTFT and how much of the prompt was cached."""
    from rich.table import Table

    table = Table(title="This chat", title_justify="left", caption_justify="left",
                  caption="cached: prompt tokens reused from the verifier's KV cache")
    for col in ("#", "pair", "prompt", "cached", "ttft", "tokens", "tok/s", "latency", "finish"):
        table.add_column(col, justify="left" if col in ("pair", "finish") else "right")
    start = max(0, len(history.turns) - 20)
    for i, t in enumerate(history.turns[start:], start + 1):
        s = t.stats
        if s is None:
            continue
        table.add_row(
            str(i) + ("" if i - 1 >= history.first else "*"), t.pair, str(s.prompt_tokens), str(s.prompt_cached),
            f"{s.ttft_s * 1000:.0f} ms", str(s.output_tokens), f"{s.tokens_per_s:.1f}", f"{s.latency_s:.2f}s",
            t.finish,
        )
    return table
