"""Rich rendering: consoles, tables and status lines. No logic lives here.

Names, paths and messages can carry user text with brackets (`[work]`, `[/]`), which Rich would
read as markup: they go through `escape` (or into a `Text`) before they are printed.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:  # rich.table is imported where a table is drawn: `qroute run` draws none
    from rich.table import Table


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich exits with 1 when the reader went away; qroute leaves quietly with 0 (cli.main)."""
        self.quiet = True
        raise BrokenPipeError


@lru_cache(maxsize=1)
def console() -> Console:
    return _Console(highlight=False)


@lru_cache(maxsize=1)
def err_console() -> Console:
    return _Console(stderr=True, highlight=False)


def _size(n: int | None) -> str:
    if not n:
        return "-"
    return f"{n / 1e6:,.0f} MB" if n >= 1e6 else f"{n / 1e3:,.0f} kB"


def models_table(reg, statuses) -> Table:
    from rich.table import Table

    table = Table(title="Models", title_justify="left")
    for col in ("name", "present", "verified", "size", "vocab", "path"):
        table.add_column(col, overflow="fold")
    for st in statuses:
        spec = reg.models[st.name]
        table.add_row(
            escape(st.name),
            "[green]yes[/]" if st.present else "[red]no[/]",
            "[green]yes[/]" if st.verified else "-",
            _size(st.size_bytes),
            escape(f"{spec.vocab or '?'} ({spec.vocab_size or '?'})"),
            escape(str(st.path)),
        )
    return table


def pairs_table(reg, status_by_name) -> Table:
    from rich.table import Table

    table = Table(title="Pairs", title_justify="left")
    for col in ("pair", "verifier", "drafter", "ready"):
        table.add_column(col)
    for pair in reg.pairs.values():
        if pair.remote:
            continue  # in the endpoints table
        ready = all(status_by_name[n].present for n in pair.model_names if n in status_by_name)
        table.add_row(escape(pair.name), escape(pair.verifier), escape(pair.drafter),
                      "[green]yes[/]" if ready else "[red]no[/]")
    return table


def endpoint_pairs_table(reg, states) -> Table:
    """Pairs that run on remote endpoints, with each endpoint's state (`states`: name ->
    endpoints.probe.Capabilities)."""
    from rich.table import Table

    table = Table(title="Pairs on endpoints", title_justify="left")
    for col in ("pair", "verifier", "drafter", "endpoint", "model", "state"):
        table.add_column(col, overflow="fold")
    for pair in (p for p in reg.pairs.values() if p.remote):
        endpoint, caps = reg.endpoints[pair.endpoint], states.get(pair.endpoint)
        model = endpoint.model_for(pair)
        if caps is None:
            state = "-"
        elif not caps.ok:
            state = f"[red]down[/]: {escape(caps.error or '')}"
        elif caps.serves(model) is False and endpoint.kind == "openai":
            state = f"[red]up, but does not serve {escape(model)}[/] (it serves {escape(', '.join(caps.models))})"
        else:
            state = "[green]up[/]"
        table.add_row(escape(pair.name), escape(pair.verifier), escape(pair.drafter),
                      escape(f"{endpoint.name} ({endpoint.kind}, {endpoint.url})"), escape(model), state)
    return table


def stats_line(gen, budget_s: float | None = None, threads: int | None = None) -> str:
    """One compact line: pair, tokens, speed, acceptance, latency vs. budget (and the thread
    count when other processes' load made qroute use fewer threads than cores)."""
    s = gen.stats
    parts = [f"[bold]{escape(gen.pair)}[/]", f"{s.output_tokens} tok", f"{s.tokens_per_s:.1f} tok/s",
             f"ttft {s.ttft_s * 1000:.0f} ms"]
    if s.acceptance is not None:
        parts.append(f"accepted {s.accepted}/{s.drafted} ({s.acceptance:.0%})")
    lat = f"{s.latency_s:.2f}s"
    if budget_s:
        colour = "green" if s.latency_s <= budget_s else "red"
        lat = f"[{colour}]{lat}[/] / {budget_s:g}s budget"
    parts.append(lat)
    if threads is not None and threads < (os.cpu_count() or 1):
        parts.append(f"[yellow]{threads} thread{'s' if threads > 1 else ''} (other processes busy)[/]")
    if gen.finish_reason == "length":
        parts.append("[yellow]cut at max tokens[/]")
    elif gen.finish_reason == "interrupted":
        parts.append("[yellow]interrupted[/]")
    return " · ".join(parts)


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()


def explain_table(decision) -> Table:
    """Every candidate pair the router weighed, with the choice and its reason."""
    from rich.table import Table

    budget = f"{decision.budget_s:g}s" if decision.budget_s else "none"
    table = Table(
        title=escape(f"Route ({decision.strategy}, budget {budget})"), title_justify="left",
        caption=escape(decision.reason), caption_justify="left",
    )
    for col in ("pair", "pred. quality", "pred. latency", "fits", "chosen"):
        table.add_column(col)
    for c in decision.candidates:
        table.add_row(
            escape(c.pair), f"{c.predicted_quality:.3f}", f"{c.predicted_latency_s:.2f}s",
            "[green]yes[/]" if c.fits else "[red]no[/]", "[bold green]◀[/]" if c.pair == decision.chosen else "",
        )
    return table


def print_error(console: Console, exc) -> None:
    """A QrouteError as 'Error: message' and its hint. Messages quote user input (a pair name,
    a path with [brackets]), so they are printed as plain text, never read as markup."""
    from rich.text import Text

    console.print(Text.assemble(("Error:", "bold red"), " ", exc.message), soft_wrap=True)
    if exc.hint:
        console.print(Text(exc.hint, style="dim"), soft_wrap=True)


_PROGRESS_COLUMNS = {
    "count": "MofNCompleteColumn",  # 3/12
    "elapsed": "TimeElapsedColumn",
    "remaining": "TimeRemainingColumn",
    "bytes": "DownloadColumn",  # 12.3/98.0 MB
    "speed": "TransferSpeedColumn",
}


def progress_bar(*show: str, console: Console | None = None, disable: bool = False, transient: bool = False):
    """A Rich progress display: each task's description and bar, then the columns named in
    `show` ("count", "elapsed", "remaining", "bytes", "speed"), on stderr by default."""
    import rich.progress as rp

    columns = [rp.TextColumn("{task.description}"), rp.BarColumn()]
    columns += [getattr(rp, _PROGRESS_COLUMNS[name])() for name in show]
    return rp.Progress(*columns, console=console or err_console(), disable=disable, transient=transient)


def calibration_progress(console: Console | None = None):
    """The bar a command shows while the router measures a model on first use."""
    return progress_bar("elapsed", console=console, transient=True)
