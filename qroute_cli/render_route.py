"""Rich views of routing state: the calibration profile and the run-log summary."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from qroute_cli.routing.latency import Machine, Profile


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f} ms"


def profile_table(profile: Profile, machine: Machine) -> Table:
    """One row per model: prefill, decode and verify costs, and how they were measured."""
    same = profile.machine == machine
    note = "" if same else f"  [red](measured on another setup; this one is {escape(machine.key)})[/]"
    table = Table(title=f"Calibration: {escape(profile.machine.key)}{note}", title_justify="left",
                  caption=f"n-gram lookup {profile.ngram_s * 1e6:.0f} µs", caption_justify="left")
    for col in ("model", "prefill tok/s", "decode tok/s", "verify k=1/4/8", "draft/tok", "mode"):
        table.add_column(col, justify="left" if col in ("model", "mode") else "right")
    for m in profile.models.values():
        triple = [m.verify(k) for k in (1, 4, 8)]
        verify = ("/".join(f"{v:.2f}" for v in triple) + " s") if max(triple) >= 1 else \
            ("/".join(f"{v * 1000:.0f}" if v >= 0.01 else f"{v * 1000:.2f}" for v in triple) + " ms")
        table.add_row(
            escape(m.model), f"{m.prefill_tps:,.0f}", f"{1 / m.decode_s:,.1f}", verify, _ms(m.draft_token_s),
            "quick" if m.quick else "full",
        )
    return table


def stats_table(summary: dict) -> Table:
    """Runs per pair, observed acceptance, latency error, budget hit rate, routing overhead."""
    table = Table(title="Run log", title_justify="left", caption_justify="left", caption=(
        "accept: drafted tokens accepted; lat err: median |predicted - observed| / observed; "
        "hits: runs within their budget; overhead: routing time per prompt (median)"))
    for col in ("pair", "runs", "accept", "lat err", "hits", "latency", "overhead"):
        table.add_column(col, justify="left" if col == "pair" else "right")
    rows = list(summary["pairs"].items()) + [("all", summary["total"])]
    for name, b in rows:
        table.add_row(
            f"[bold]{name}[/]" if name == "all" else escape(name), str(b["runs"]), _pct(b["acceptance"]),
            _pct(b["latency_mdape"]), _pct(b["budget_hit_rate"]),
            "-" if b["mean_latency_s"] is None else f"{b['mean_latency_s']:.2f} s",
            "-" if b["overhead_ms_p50"] is None else f"{b['overhead_ms_p50']:.2f} ms",
        )
    return table


def remote_profile_table(profiles) -> Table:
    """One row per pair on an endpoint: its measured overhead, prefill and decode."""
    table = Table(title="Calibration of pairs on endpoints", title_justify="left")
    for col in ("pair", "overhead", "prefill tok/s", "decode tok/s", "timed by"):
        table.add_column(col, justify="left" if col in ("pair", "timed by") else "right")
    for p in profiles.values():
        table.add_row(escape(p.pair), _ms(p.overhead_s), f"{p.prefill_tps:,.0f}", f"{1 / p.decode_s:,.1f}",
                      "the server" if p.timed_by_server else "wall clock (overhead in prefill)")
    return table
