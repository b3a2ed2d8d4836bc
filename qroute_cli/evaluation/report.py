"""Bench output: Rich tables, JSON/CSV rows, PNG plots of the quality-latency plane."""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from qroute_cli.evaluation import frontier
from qroute_cli.evaluation.bench import BenchResult
from qroute_cli.evaluation.matrix import CAPPED_FILE, MATRIX_FILE
from qroute_cli.evaluation.tasks import TASKS
from qroute_cli.numeric import percentile


def outcome_row(o, task: str = "all") -> dict:
    overhead = o.extra.get("overhead_ms")
    return {
        "task": task, "strategy": o.label, "setting": o.setting,
        "mean_quality": round(o.mean_quality, 4), "mean_latency_s": round(o.mean_latency, 3),
        "p50_latency_s": round(o.percentile(50), 3), "p95_latency_s": round(o.percentile(95), 3),
        "budget_s": o.budget_s, "budget_hit_rate": None if o.hit_rate is None else round(o.hit_rate, 3),
        "routing_overhead_ms_p50": None if not overhead else round(percentile(overhead, 50), 3),
        "choices": dict(sorted({p: o.choices.count(p) for p in set(o.choices)}.items())),
    }


def most_chosen(choices: list[str]) -> tuple[str, int]:
    """The pair chosen most often and its count; a tie goes to the first name in sort order, so
    the table is the same on every run (a set's order changes between runs)."""
    counts = {p: choices.count(p) for p in set(choices)}
    return min(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def summary_table(res: BenchResult, title: str = "Strategies on the result matrix") -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("strategy", "setting", "quality", "mean lat.", "p95 lat.", "hit rate", "most chosen"):
        t.add_column(col)
    for o in res.outcomes:
        top, count = most_chosen(o.choices)
        t.add_row(o.label, o.setting, f"{o.mean_quality:.3f}", f"{o.mean_latency:.2f}s",
                  f"{o.percentile(95):.2f}s", "-" if o.hit_rate is None else f"{o.hit_rate:.0%}",
                  f"{top} ({count}/{len(o.choices)})")
    return t


def task_columns(items) -> list[tuple[str, str]]:
    """(task, column title) for each task benched, in bench order: the title says what the
    task's quality is (code: 'code pass@1')."""
    names = list(dict.fromkeys(it.task for it in items))
    return [(name, f"{name} {TASKS[name].quality_name}") for name in names]


def cells_caption(res: BenchResult) -> str:
    """Where the matrix's cells came from and how much of the routing is simulated, in a line."""
    counts = res.summary.get("matrix_cells")
    if not counts:
        return ""
    c, k = counts["cells"], counts["capped_cells"]
    text = (f"cells: {c['reused_from_cache']} reused from the cache, {c['reused_from_results']} from earlier "
            f"results, {c['run']} run ({c['rerun_other_regime']} of them earlier results had from another "
            f"regime); capped answers: {k['reused_from_cache'] + k['reused_from_results']} reused, {k['run']} run")
    if c.get("rerun_busy"):
        text += f"; {c['rerun_busy']} cached cells timed on a busy machine run again"
    busy = c.get("others_cores") or {}
    if busy.get("max") is not None:
        text += (f"; other processes kept at most {busy['max']:.2f} cores busy during a cell, "
                 f"over 0.1 during {busy['over_0.1']}" + (f", unread for {busy['unread']}" if busy["unread"] else ""))
    waited = counts.get("waited_for_quiet")
    if waited is not None:
        text += f"; cells waited {waited['seconds']:.0f} s in all for others to use at most {waited['below_cores']:g} cores"
    sim = res.summary.get("simulated")
    if sim and sim["answers"]:
        text += f"; simulated: {sim['answers']} answers in {sim['points']} points"
    return text


def matrix_table(res: BenchResult) -> Table:
    t = Table(title="Pairs measured (every prompt run once)", title_justify="left", caption=cells_caption(res) or None,
              caption_justify="left")
    columns = task_columns(res.items)
    for col in ("pair", "quality", *(title for _, title in columns), "mean lat.", "tok/s", "acceptance"):
        t.add_column(col)
    m = res.matrix
    for p in m.pairs:
        cells = [m.cell(it, p) for it in res.items]
        toks = sum(c.tokens for c in cells)
        secs = sum(c.latency_s for c in cells)
        drafted = sum(c.drafted for c in cells)
        acc = sum(c.accepted for c in cells) / drafted if drafted else None
        per_task = []
        for task, _ in columns:
            qs = [m.cell(it, p).quality for it in res.items if it.task == task]
            per_task.append(f"{sum(qs) / len(qs):.3f}")
        t.add_row(p, f"{sum(c.quality for c in cells) / len(cells):.3f}", *per_task, f"{secs / len(cells):.2f}s",
                  f"{toks / secs:.1f}" if secs else "-", "-" if acc is None else f"{acc:.0%}")
    return t


def headline_table(res: BenchResult) -> Table:
    t = Table(title="Headline figures", title_justify="left")
    for col in ("scope", "hypervolume vs best static", "quality vs cost @ matched latency", "APGR", "n"):
        t.add_column(col)

    def fmt(v, pct=False):
        if v is None:
            return "-"
        return f"{v:+.1%}" if pct else f"{v:.3f}"

    rows = [("all", res.summary)] + [(task, d["summary"]) for task, d in res.by_task.items()]
    for scope, s in rows:
        t.add_row(scope, fmt(s["hypervolume_ratio_vs_best_static"]),
                  fmt(s["quality_gain_vs_cost_at_matched_latency"], pct=True), fmt(s["apgr"]), str(s["n_prompts"]))
    return t


def routing_analysis(res: BenchResult) -> list[dict]:
    """Which pair QualityRoute chose per task and prompt-length bucket, at each budget, and why."""
    rows = []
    for o in res.outcomes:
        if not o.is_plain_quality:
            continue
        for task in sorted({it.task for it in res.items}):
            for bucket, (lo, hi) in {"short": (0, 200), "medium": (200, 600), "long": (600, 10**9)}.items():
                idx = [i for i, it in enumerate(res.items) if it.task == task and lo <= len(it.prompt) < hi]
                picks = [o.choices[i] for i in idx]
                whys = [o.extra["why"][i] for i in idx] if "why" in o.extra else []
                if picks:
                    rows.append({"budget": o.setting, "task": task, "length": bucket,
                                 "choices": dict(sorted({p: picks.count(p) for p in set(picks)}.items())),
                                 "why": dict(sorted({w: whys.count(w) for w in set(whys)}.items()))})
    return rows


def write_outputs(res: BenchResult, out: Path) -> list[Path]:
    """JSON + CSV of every row, summary.json, and one PNG plot per task (and overall)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    rows = [outcome_row(o) for o in res.outcomes]
    for task, d in res.by_task.items():
        rows += [outcome_row(o, task) for o in d["outcomes"]]
    (out / "strategies.json").write_text(json.dumps(rows, indent=1))
    with (out / "strategies.csv").open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({**r, "choices": json.dumps(r["choices"])})
    m = res.matrix
    # Each cell with its cache key and regime, so a later bench can seed its cache from them.
    cells = [{"item": it.id, "task": it.task, "pair": p, **asdict(m.cell(it, p)), **m.meta.get((it.id, p), {})}
             for it in res.items for p in m.pairs]
    (out / MATRIX_FILE).write_text(json.dumps(cells, indent=1, ensure_ascii=False))
    tasks = {it.id: it.task for it in res.items}
    capped = [{"item": item, "task": tasks[item], "pair": p, "max_tokens": cap, **asdict(cell),
               **m.meta.get((item, p, cap), {})}
              for (item, p, cap), cell in sorted(m.capped.items()) if item in tasks]
    (out / CAPPED_FILE).write_text(json.dumps(capped, indent=1, ensure_ascii=False))
    written += [out / "strategies.json", out / "strategies.csv", out / MATRIX_FILE, out / CAPPED_FILE]
    live = [o for o in res.outcomes if "stream" in o.extra]
    if live:  # the live loop's per-prompt trace, in stream order
        (out / "live_stream.json").write_text(json.dumps(
            [{"budget_s": o.budget_s, "stream": o.extra["stream"]} for o in live], indent=1))
        written.append(out / "live_stream.json")
    summary = dict(res.summary)
    # The files this run wrote beside it, by content: their provenance is summary.json's.
    summary["files"] = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in written}
    summary["by_task"] = {task: d["summary"] for task, d in res.by_task.items()}
    summary["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(res.config).items()}
    summary["routing_analysis"] = routing_analysis(res)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    written.append(out / "summary.json")
    written += plot(res, out)
    return written


def plot(res: BenchResult, out: Path) -> list[Path]:
    """One Pareto plot per scope (all tasks, then each task), from the rows strategies.json holds."""
    scopes = [("all", [outcome_row(o) for o in res.outcomes])]
    scopes += [(t, [outcome_row(o, t) for o in d["outcomes"]]) for t, d in res.by_task.items()]
    paths = [pareto_plot(rows, f"qroute bench: {scope}", out / f"pareto_{scope}.png") for scope, rows in scopes]
    return [p for p in paths if p is not None]


def frontier_line(points: list[tuple[float, float]], right: float) -> tuple[list[float], list[float]]:
    """The step line of the best quality `points` reach at each mean latency (drawn with
    where="post"): their Pareto frontier, held level from the slowest point to `right`."""
    fr = frontier.pareto(points)
    return [p[0] for p in fr] + [right], [p[1] for p in fr] + [fr[-1][1]]


STYLES = {"static": "s", "quality": "o", "cost": "v", "oracle": "*", "random": "x", "bandit": "^", "ensemble": "D"}


def pareto_plot(rows: list[dict], title: str, path: Path) -> Path | None:
    """The quality-latency plane of `rows` (outcome_row dicts of one scope): every strategy's
    points, the Pareto frontier of the static pairs as a step line (the best quality a fixed
    pair reaches at each mean latency: the baseline the headline compares with), and the
    frontiers of QualityRoute, the oracle and the bandit. None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    right = max(r["mean_latency_s"] for r in rows) * 1.3
    for label in sorted({r["strategy"] for r in rows}):
        group = [r for r in rows if r["strategy"] == label]
        pts = [(r["mean_latency_s"], r["mean_quality"]) for r in group]
        base = None if "+online" in label else label.split(" ")[0]  # learning online: no marker of its own
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=STYLES.get(base, "."), label=label, alpha=0.8)
        if base in ("quality", "oracle", "bandit") and len(pts) > 1:
            fr = frontier.pareto(pts)
            ax.step([p[0] for p in fr], [p[1] for p in fr], where="post", alpha=0.5)
    statics = [(r["mean_latency_s"], r["mean_quality"]) for r in rows if r["strategy"] == "static"]
    if statics:
        xs, ys = frontier_line(statics, right)
        ax.step(xs, ys, where="post", color="black", linestyle="--", linewidth=1.2, label="static frontier")
    for r in rows:
        if r["strategy"] == "static":
            ax.annotate(r["setting"], (r["mean_latency_s"], r["mean_quality"]), fontsize=6, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlim(right=right)
    ax.set_xlabel("mean latency per prompt (s, log)")
    ax.set_ylabel("mean quality")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
