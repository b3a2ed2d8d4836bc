"""Regenerate bench/REPORT.md from the files in bench/results/.

    bash bench/run_full.sh                          # runs everything, then this script
    .venv/bin/python -m bench.write_report          # only re-renders from existing results
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from qroute_cli.evaluation.bootstrap import shown
from qroute_cli.evaluation.provenance import engine_revision
from qroute_cli.jsonl import read_jsonl
from qroute_cli.numeric import percentile

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def _load(name: str):
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def _load_lines(name: str) -> list[dict]:
    path = RESULTS / name
    return read_jsonl(path) if path.exists() else []


def _f(v, fmt="{:.3f}"):
    return "–" if v is None else fmt.format(v)


def strategies_section(rows: list[dict], task: str) -> list[str]:
    out = ["| strategy | setting | quality | mean latency | p95 latency | budget hit rate | chosen |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["task"] != task:
            continue
        chosen = ", ".join(f"{k} {v}" for k, v in sorted(r["choices"].items(), key=lambda kv: (-kv[1], kv[0]))[:3])
        out.append(f"| {r['strategy']} | {r['setting']} | {r['mean_quality']:.3f} | {r['mean_latency_s']:.2f}s | "
                   f"{r['p95_latency_s']:.2f}s | {_f(r['budget_hit_rate'], '{:.0%}')} | {chosen} |")
    return out


def pairs_section(cells: list[dict]) -> list[str]:
    """Every pair on every task: each metric, latency p50/p95, tokens/s, acceptance, cut answers."""
    import statistics

    metric_names = {"gsm8k": ("em",), "nq": ("em", "f1", "contains"), "wp": ("rouge_l", "bleu"), "code": ("pass",)}
    shown = {"pass": "pass@1"}  # a metric's key in the scores -> its name in the table
    out = ["| task | pair | metrics | quality | p50 latency | p95 latency | tokens/s | acceptance | cut at cap |",
           "|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["task"], c["pair"]), []).append(c)
    from qroute_cli.evaluation.tasks import TASKS

    caps = {name: task.max_tokens for name, task in TASKS.items()}
    for (task, pair), cs in sorted(groups.items()):
        lat = [c["latency_s"] for c in cs]
        drafted = sum(c["drafted"] for c in cs)
        acc = sum(c["accepted"] for c in cs) / drafted if drafted else None
        mets = ", ".join(f"{shown.get(m, m)} {statistics.mean(c['scores'].get(m, 0.0) for c in cs):.3f}"
                         for m in metric_names.get(task, ()))
        tps = sum(c["tokens"] for c in cs) / max(sum(c["latency_s"] for c in cs), 1e-9)
        cut = sum(c["tokens"] >= caps[task] for c in cs) / len(cs)
        out.append(f"| {task} | {pair} | {mets} | {statistics.mean(c['quality'] for c in cs):.3f} | "
                   f"{statistics.median(lat):.2f}s | {percentile(lat, 95):.2f}s | {tps:.1f} | {_f(acc, '{:.0%}')} | {cut:.0%} |")
    return out


# What `quality` is on each task, for the prose above the tables (only the tasks benched are named).
QUALITY = {
    "gsm8k": "GSM8K exact match",
    "nq": "NQ max(token F1, gold answer contained in the first line)",
    "wp": "WritingPrompts ROUGE-L against the human story (HANNA prompts)",
    "code": "HumanEval pass@1 (the problem's tests run against the answer in a sandbox)",
}
METRICS = {
    "gsm8k": "GSM8K: exact match of the final number",
    "nq": "NQ: exact match, token F1 and 'a gold answer is contained'",
    "wp": "WritingPrompts: ROUGE-L and BLEU (0-1) against the human story",
    "code": "HumanEval: pass@1, 1 when the answer passes all of the problem's tests",
}


def _named(table: dict[str, str], tasks, sep: str = ", ") -> str:
    return sep.join(table.get(t, t) for t in tasks)


MODE_LABELS = {"soft": "budget only", "hard": "`--hard-budget`"}
HIT_TARGET = 0.95  # the share of answers within the budget that qroute aims at without --hard-budget


def label(mode: str) -> str:
    return MODE_LABELS.get(mode, mode)


def _counts(counter: dict) -> str:
    """"a 3, b 1": most frequent first, ties by name."""
    return ", ".join(f"{k} {v}" for k, v in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def budget_hit_section(data: dict) -> list[str]:
    """bench.budget_hit's results: provenance, hit rate per mode, per task, and every late answer."""
    from datetime import datetime

    from bench.budget_hit import wilson
    from qroute_cli.config import load_registry
    from qroute_cli.routing.router import parse_budget

    modes, rows = data["modes"], data["rows"]
    budget_s = parse_budget(data["budget"])
    first = next(iter(modes))
    per_task = modes[first]["per_task"]
    pairs = load_registry(None, include_user=False).pairs
    models = sorted({m for mode in modes.values() for name in mode["pairs"]
                     for m in (pairs[name].model_names if name in pairs else (name,))})
    cut_at_cap = sorted({r["tokens"] for mode_rows in rows.values() for r in mode_rows
                         if r["finish_reason"] == "length"})
    date = datetime.fromisoformat(data["date"]).strftime("%Y-%m-%d %H:%M UTC")
    out = ["## Budget-hit rate from a fresh data dir", "",
           "`python -m bench.budget_hit` wrote every prompt's row to `bench/results/budget_hit.json`; "
           "`python -m bench.write_report` writes this section from that file.",
           f"{modes[first]['prompts']} prompts (`{data['prompt_file']}`: "
           + ", ".join(f"{t['prompts']} {task}" for task, t in per_task.items())
           + ") piped through one `qroute run` process per mode, max_tokens "
           + (f"{data['max_tokens']}" if data["max_tokens"] else "the config's default")
           + (f" (answers cut for length stopped at {', '.join(map(str, cut_at_cap))} tokens)" if cut_at_cap else "")
           + f"; the models that answered: {', '.join(models)}.",
           f"The first mode ({label(first)}) starts from an empty data dir and calibrates on first use; "
           "every other mode gets a copy of that calibration and an empty learning store.",
           f"Commit {data['commit']}, {data['machine']}, {data['cores']} cores, {date}; load average "
           f"{data['load_average_before'][0]:g} before and {data['load_average_after'][0]:g} after; "
           f"llama.cpp threads per answer: {', '.join(str(t) for t in data['threads_used'])}.", ""]
    out += [f"- {label(mode)}: `{m['command']}`" for mode, m in modes.items()]
    out += ["",
            "| mode | hits | hit rate (Wilson 95%) | mean latency | p95 latency | mean predicted "
            "| median observed / predicted | observed <= predicted | finish reasons | conservative routes |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for mode, m in modes.items():
        lo, hi = m["hit_rate_wilson95"]
        out.append(f"| {label(mode)} | {m['hits']}/{m['prompts']} | {m['hit_rate']:.0%} ({lo:.0%}-{hi:.0%}) | "
                   f"{_f(m['mean_latency_s'], '{:.2f} s')} | {_f(m['p95_latency_s'], '{:.2f} s')} | "
                   f"{_f(m['mean_predicted_s'], '{:.2f} s')} | {_f(m['median_observed_over_predicted'], '{:.2f}')} | "
                   f"{_f(m['observed_within_predicted'], '{:.0%}')} | {_counts(m['finish_reasons'])} | "
                   f"{m['conservative_routes']} |")
    out += ["", "Conservative routes: the predictor was not trained on the prompt's task type, so the route "
            "assumed the answer runs to max_tokens."]
    soft = modes.get("soft")
    if soft:
        lo, hi = soft["hit_rate_wilson95"]
        best_lo = wilson(soft["prompts"], soft["prompts"])[0]
        out += ["", f"**The target of >= {HIT_TARGET:.0%} within the budget without the hard budget is "
                f"{'met' if soft['hit_rate'] >= HIT_TARGET else 'missed'}**: {soft['hits']}/{soft['prompts']} "
                f"({soft['hit_rate']:.0%}, Wilson 95% {lo:.0%}-{hi:.0%}; with {soft['prompts']} prompts even "
                f"{soft['prompts']}/{soft['prompts']} would only show >= {best_lo:.0%} at 95% confidence)."]
    out += ["", "Per task (mean latency and mean predicted latency in seconds):", "",
            "| task | " + " | ".join(f"{label(m)}: hits | mean latency | mean predicted | mean tokens" for m in modes)
            + " |", "|---|" + "---|---|---|---|" * len(modes)]
    for task in per_task:
        cells = []
        for m in modes.values():
            t = m["per_task"].get(task)
            cells += ([f"{t['hits']}/{t['prompts']}", f"{t['mean_latency_s']:.2f}", f"{t['mean_predicted_s']:.2f}",
                       f"{t['mean_tokens']:.0f}"] if t else ["–"] * 4)
        out.append(f"| {task} | " + " | ".join(cells) + " |")
    late = [(mode, r) for mode in modes for r in rows.get(mode, []) if not r["hit"]]
    out += ["", f"Answers whose observed latency exceeded the {budget_s:g} s budget: {len(late)}."]
    if late:
        out += ["", "| mode | task | pair | tokens | finish | observed | predicted | observed / predicted "
                "| over the budget by |", "|---|---|---|---|---|---|---|---|---|"]
        for mode, r in late:
            pred, seen = r["predicted_latency_s"], r["latency_s"]
            out.append(f"| {label(mode)} | {r['task']} | {r['pair']} | {r['tokens']} | {r['finish_reason']} | "
                       f"{seen:.2f} s | {_f(pred, '{:.2f} s')} | {_f(seen / pred if pred else None, '{:.1f}x')} | "
                       f"{seen - budget_s:.2f} s |")
    for mode in modes:
        cut = [r for r in rows.get(mode, []) if r["finish_reason"] == "deadline"]
        if cut:
            tokens = sorted(r["tokens"] for r in cut)
            out += ["", f"{label(mode)} stopped {len(cut)} answers at the deadline ("
                    + _counts(Counter(r["task"] for r in cut)) + f"; {tokens[0]}-{tokens[-1]} tokens kept); "
                    f"{sum(not r['hit'] for r in cut)} of them still ended after the budget."]
    return out + [""]


def frontier_section(path: Path) -> list[str]:
    """The headline against the static frontier, with intervals: the markdown `python -m
    bench.replay --markdown` wrote from the committed matrix, one heading level down."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        out.append("#" + line if line.startswith("#") else line)
    out += ["", "The sections below are the earlier comparisons (single best pair, cost-only) from the "
            "same matrix, kept as secondary figures.", ""]
    return out


WIDE_RUNS = ("nq200",)  # one-task runs with more prompts than the main run, each in results/NAME


def wide_run_section(name: str) -> list[str]:
    """A one-task bench on more of the task's test side (`qroute bench --tasks T --limit N --out
    bench/results/NAME`): QualityRoute against the static frontier with 95% intervals, and each
    pair's mean quality and latency, so a per-task figure can be read on more than 40 prompts."""
    summary = _load(f"{name}/summary.json")
    cells = _load(f"{name}/matrix.json") or []
    if not summary:
        return []
    task = ", ".join(summary["tasks"])
    figs = _all_tasks_intervals(summary, "headline")
    hv, gain = summary.get("hypervolume_ratio_vs_static_frontier"), summary.get("quality_gain_vs_static_frontier_abs")
    fig_hv, fig_gain = figs.get("hypervolume_ratio_vs_static_frontier"), figs.get("quality_gain_vs_static_frontier_abs")
    out = [f"## {task} on {summary['n_prompts']} prompts", ""] + made_by(summary) + [
        f"The main run has 40 prompts per task, too few to tell the pairs apart on {task}: here {summary['n_prompts']} "
        "prompts of its test side (the main run's 40 among them), every pair on every prompt, strategies compared "
        "on that matrix as in the main run.", "",
        f"QualityRoute against the static frontier: hypervolume {_f(hv)}x{_interval(fig_hv, '{:.3f}')} "
        f"({_verdict(fig_hv, hv, 1.0, '> 1.0x') if hv is not None else '–'}); quality at matched latency "
        f"{_f(gain, '{:+.3f}')}{_interval(fig_gain, '{:+.3f}')} absolute.", "",
        "| pair | mean quality | mean latency (s) |", "|---|---|---|"]
    by_pair: dict[str, list[dict]] = {}
    for c in cells:
        by_pair.setdefault(c["pair"], []).append(c)
    for pair, rows in sorted(by_pair.items(), key=lambda kv: sum(r["latency_s"] for r in kv[1]) / len(kv[1])):
        out.append(f"| {pair} | {sum(r['quality'] for r in rows) / len(rows):.3f} | "
                   f"{sum(r['latency_s'] for r in rows) / len(rows):.2f} |")
    abl = summary.get("ablation", {})
    if abl:
        out += ["", "Other scorers on the same cells (hypervolume against the static frontier): "
                + ", ".join(f"{k} {_f(v.get('hypervolume_ratio_vs_static_frontier'))}x" for k, v in abl.items()
                            if v.get("hypervolume_ratio_vs_static_frontier") is not None) + "."]
    return out + [""]


def _verdict(fig: dict | None, estimate: float, target: float, label: str) -> str:
    """The target `label` met or missed by the point estimate, and whether the 95% interval agrees:
    a point estimate over the line with an interval reaching below it is not a shown result."""
    met = estimate >= target
    head = f"target {label}: {'met' if met else 'missed'}"
    if not fig or fig.get("low") is None:
        return head
    if (fig["low"] >= target) if met else (fig["high"] < target):
        return head + " by the whole 95% interval"
    return head + " by the point estimate only: the 95% interval spans the target, so it is not shown"


def _all_tasks_intervals(summary: dict, part: str) -> dict:
    """summary.json's 95% intervals over all tasks for `part` ('headline' or 'ablation'); {} without them."""
    return ((summary.get("intervals") or {}).get("all") or {}).get(part) or {}


def _interval(fig: dict | None, fmt: str) -> str:
    return "" if not fig or fig.get("low") is None else f" [{fmt.format(fig['low'])}, {fmt.format(fig['high'])}]"


def targets_sentence(summary: dict) -> str:
    """The seed claims (>= 1.25x the static approach's hypervolume, >= +15% quality over cost-only
    routing at matched latency), each against the baseline the summary has a figure for, with its
    95% interval (where the summary has intervals) and the absolute figures beside the relative."""
    figs = _all_tasks_intervals(summary, "headline")
    hv = summary.get("hypervolume_ratio_vs_static_frontier")
    if hv is not None:
        fig = figs.get("hypervolume_ratio_vs_static_frontier")
        hv_text = (f"{hv:.2f}x{_interval(fig, '{:.2f}')} the Pareto frontier of the static pairs "
                   f"({_verdict(fig, hv, 1.25, '>= 1.25x')})")
    elif summary.get("hypervolume_ratio_vs_best_static") is not None:
        # Not the target's baseline: no verdict from it.
        hv_text = (f"{summary['hypervolume_ratio_vs_best_static']:.2f}x the single best static pair (the target is "
                   "against the static frontier, which this summary has no figure for)")
    else:
        hv_text = "–"
    gain, ap = summary.get("quality_gain_vs_cost_at_matched_latency"), summary.get("apgr")
    if gain is not None:
        fig = figs.get("quality_gain_vs_cost_at_matched_latency")
        cost = summary.get("cost_point") or [None, None]
        absolute = ""
        if summary.get("quality_at_cost_latency") is not None and cost[1] is not None:
            absolute = (f", {summary['quality_at_cost_latency']:.3f} against {cost[1]:.3f} at "
                        f"{cost[0]:.2f} s: {summary['quality_at_cost_latency'] - cost[1]:+.3f}"
                        f"{_interval(figs.get('quality_gain_vs_cost_at_matched_latency_abs'), '{:+.3f}')} absolute")
        gain_text = f"{gain:+.0%}{_interval(fig, '{:+.0%}')}{absolute} ({_verdict(fig, gain, 0.15, '>= +15%')})"
    else:
        gain_text = "–"
    return ("Against the targets (all tasks): hypervolume " + hv_text
            + "; quality at cost-only routing's mean latency " + gain_text
            + (f"; APGR {ap:.2f}." if ap is not None else "."))


def ablation_table(summary: dict) -> list[str]:
    """Every variant the bench ran against the static frontier, with 95% intervals and its paired
    difference to the shipped predictor (resampled on the same prompts) where the summary has them."""
    abl = summary.get("ablation", {})
    iv, head = _all_tasks_intervals(summary, "ablation"), _all_tasks_intervals(summary, "headline")

    def cell(fig: dict | None, value, fmt: str = "{:.3f}") -> str:
        return shown(fig, fmt) or _f(value, fmt)

    out = ["| variant | hypervolume vs static frontier | minus shipped | quality gain vs static frontier (abs) "
           "| minus shipped | hypervolume vs best static | APGR |", "|---|---|---|---|---|---|---|",
           f"| `quality` (shipped predictor) | {cell(head.get('hypervolume_ratio_vs_static_frontier'), summary.get('hypervolume_ratio_vs_static_frontier'))} "
           f"| – | {cell(head.get('quality_gain_vs_static_frontier_abs'), summary.get('quality_gain_vs_static_frontier_abs'), '{:+.3f}')} "
           f"| – | {_f(summary.get('hypervolume_ratio_vs_best_static'))} | {_f(summary.get('apgr'))} |"]
    for name, v in abl.items():
        figs, diff = (iv.get(name) or {}).get("figures") or {}, (iv.get(name) or {}).get("vs_shipped") or {}
        out.append(f"| `{name}` | {cell(figs.get('hypervolume_ratio_vs_static_frontier'), v.get('hypervolume_ratio_vs_static_frontier'))} "
                   f"| {cell(diff.get('hypervolume_ratio_vs_static_frontier'), None, '{:+.3f}')} "
                   f"| {cell(figs.get('quality_gain_vs_static_frontier_abs'), v.get('quality_gain_vs_static_frontier_abs'), '{:+.3f}')} "
                   f"| {cell(diff.get('quality_gain_vs_static_frontier_abs'), None, '{:+.3f}')} "
                   f"| {_f(v.get('hypervolume_ratio_vs_best_static'))} | {_f(v.get('apgr'))} |")
    return out + ["", "95% intervals: bootstrap over prompts within each task; `*`: the interval excludes no "
                  "difference (1 for a ratio, 0 for a gain or a difference)."]


def busy_core_sentences(speed: list[dict]) -> list[str]:
    """What the rows show about threads when another process keeps a core busy: per model,
    generation speed with one thread against two, busy core and quiet."""
    out = []
    for model in dict.fromkeys(r["model"] for r in speed):
        def tps(threads: int, hog: bool) -> float | None:
            return next((r["gen_tps"] for r in speed if r["model"] == model and r["threads"] == threads
                         and r["hog"] == hog and not r["omp_wait_policy"]), None)

        one, two = tps(1, True), tps(2, True)
        if one and two:
            quiet = tps(2, False)
            out.append(f"{model}, one core busy: {two:.1f} tokens/s with 2 threads, {one:.1f} with 1 "
                       f"({one / two:.1f}x)" + (f"; {quiet:.1f} with 2 threads on a quiet machine." if quiet else "."))
    if out:
        out.append("qroute picks the thread count per answer from the other processes' recent CPU use "
                   "(qroute_cli/generation/threads.py); `--threads` fixes it.")
    return out


def build_sentence(builds: list[dict]) -> str:
    """How far apart the builds' generation speeds are, per model, from the rows alone."""
    diffs = []
    for model in dict.fromkeys(r["model"] for r in builds):
        tps = [r["gen_tps"] for r in builds if r["model"] == model]
        if len(tps) > 1 and min(tps) > 0:
            diffs.append((max(tps) / min(tps) - 1, model))
    if not diffs:
        return ""
    worst, model = max(diffs)
    return (f"Generation speed differs between the builds by at most {worst:.0%} ({model}); "
            "the rows are single runs of a median of 3, so differences of that order are not established.")


def redraw_plots(rows: list[dict]) -> None:
    """The Pareto plots of the report, from strategies.json: every strategy's points and the
    static pairs' frontier as a line (the baseline the headline compares with)."""
    from qroute_cli.evaluation.report import pareto_plot

    for scope in dict.fromkeys(r["task"] for r in rows):
        pareto_plot([r for r in rows if r["task"] == scope], f"qroute bench: {scope}", RESULTS / f"pareto_{scope}.png")


def overhead_section(data: dict) -> list[str]:
    """bench.overhead's results: decide() time per prompt with the shipped predictor and its
    share of end-to-end latency, overall and per task."""
    prov, a = data["provenance"], data["all"]
    busy = max(prov["load_average_before"][0], prov["load_average_after"][0]) >= 0.5 * (prov.get("cores") or 1)
    out = ["## Routing overhead with the shipped predictor", ""] + made_by(data) + [
           f"`python -m bench.overhead` timed the router's decide() (features, the ONNX predictor "
           f"`{data['scorer']['file']}` ({data['scorer']['name']}), the latency model for {len(data['pairs'])} pairs "
           f"and the policy) on the {a['n_prompts']} prompts of `{prov['matrix']['file']}`, QualityRoute at a "
           f"{data['budget_s']:g} s budget, with the profile `{prov['profile']['file']}`: one warm-up pass, then "
           f"the median of {data['repeats']} decisions per prompt; p50/p95 are over prompts. The share of end-to-end "
           "latency divides that time by itself plus the measured latency of the pair chosen (from the matrix).",
           f"Load average {prov['load_average_before'][0]:g} before and {prov['load_average_after'][0]:g} after, "
           f"{prov.get('cores', '?')} cores"
           + (": other work shared the CPU, so these are rough figures." if busy else "."), "",
           "| scope | prompts | decide() p50 | p95 | predictor p50 | latency model + policy p50 "
           "| share of end-to-end p50 | p95 | overall | share with the fastest pair p95 |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for scope, f in [("all", a)] + list(data["by_task"].items()):
        s, fast = f["share_of_end_to_end"], f["share_if_fastest_pair"]
        out.append(f"| {scope} | {f['n_prompts']} | {f['decide_ms']['p50']:.2f} ms | {f['decide_ms']['p95']:.2f} ms | "
                   f"{f['predictor_ms']['p50']:.2f} ms | {f['latency_model_and_policy_ms']['p50']:.2f} ms | "
                   f"{s['p50']:.3%} | {s['p95']:.3%} | {s['overall']:.3%} | {fast['p95']:.3%} |")
    lr = data.get("load_read")
    if lr:
        out += ["", f"Not in decide()'s time above: reading the machine's load for the thread count, "
                f"{lr['recent_reading_ms']:.2f} ms when the last reading is recent and {lr['no_recent_reading_ms']:.0f} ms "
                "(a sample) when it is not (the first answer of a process, or after a pause)."]
    if a.get("simulated_answers"):
        out += ["", f"{a['simulated_answers']} of the chosen answers were capped and the matrix has no capped run: "
                "their latency is the measured one scaled to the cap."]
    return out + [""]


def _named_rows(rows: list[dict], lead: str, name, tail: str = "") -> str:
    """' (LEAD a, b TAIL)' naming the rows a verdict sentence excepts; '' when there are none."""
    return f" ({lead}" + ", ".join(name(r) for r in rows) + f"{tail})" if rows else ""


def _limit(row: dict) -> str:
    """An engine row's limit and the draft length it takes: '1.77 (7)', or '–'."""
    if row.get("limit_vs_plain") is None:
        return "–"
    return f"{row['limit_vs_plain']:.2f} ({row.get('best_draft_len')})"


def engine_section(engine: dict) -> list[str]:
    """bench.engine: each mode's speed beside the limit its verifier's cost curve allows."""
    m = engine["meta"]
    out = ["## Engine: plain vs. speculative decoding, and the limit", ""] + made_by(engine) + [
           f"`bench/engine.py`: verifier {m['verifier']}, drafter {m['drafter']}, {m['max_tokens']} tokens, "
           f"median of {m['repeats']} alternating runs, llama-cpp-python {m['llama_cpp_python']}; every run reads "
           "its prompt afresh. The limit is the speed-up over plain that the verifier's measured cost curve "
           "allows at the answer's per-token acceptance (for n-gram drafts also the share of steps whose "
           "lookup finds a draft), with the draft length k it takes; 'kept' is drafted tokens kept, "
           "'per token' kept / judged. Where a model drafter's runs never drafted, its per-token acceptance "
           "is marked teacher-forced: the share of the plain answer's tokens the drafter predicts reading it.", "",
           "| prompt | mode | tokens/s | × qroute plain | limit (k) | share of limit | kept / per token "
           "| agreement with plain |", "|---|---|---|---|---|---|---|---|"]
    for r in engine["rows"]:
        limit = _limit(r)
        acc = _f(r["acceptance"], "{:.0%}") + ("" if r.get("token_acceptance") is None
                                                 else f" / {r['token_acceptance']:.0%}")
        if str(r.get("acceptance_source") or "").startswith("teacher"):
            acc += " (teacher-forced)"
        out.append(f"| {r['prompt']} | {r['mode']} | {r['tokens_per_s']:.1f} | {r['ratio_vs_qroute_plain']:.2f} | "
                   f"{limit} | {_f(r.get('share_of_limit'), '{:.0%}')} | {acc} | {r['agreement_with_plain']:.0%} |")
    spec = [r for r in engine["rows"] if r.get("share_of_limit") is not None and "acceptance rule" not in r["mode"]]
    if spec:
        below = [r for r in spec if r["share_of_limit"] < 0.9]
        slow = [r for r in spec if r["ratio_vs_qroute_plain"] < 0.95]
        out += ["", f"{len(spec) - len(below)} of {len(spec)} speculative rows reach 90% of their limit"
                + _named_rows(below, "", lambda r: f"{r['prompt']} {r['mode']} {r['share_of_limit']:.0%}", " do not")
                + f"; {len(slow)} run below 0.95x qroute plain"
                + _named_rows(slow, "", lambda r: f"{r['prompt']} {r['mode']} {r['ratio_vs_qroute_plain']:.2f}x") + "."]
    again = [r for r in engine["rows"] if r["mode"] == "qroute plain again"]
    if again:  # the same plain mode twice per repeat: how far apart two identical runs land here
        out += ["", "qroute plain run a second time each repeat (the measurement's own noise): " + "; ".join(
            f"{r['prompt']} {r['ratio_vs_qroute_plain']:.2f}x" for r in again) + "."]
    return out + [""]


def native_section(native: dict) -> list[str]:
    """bench.native: qroute against llama.cpp's own speculative decoding on the same files."""
    m = native["meta"]
    out = ["## Against llama.cpp's own speculative decoding", ""] + made_by(native) + [
           f"`bench/native.py`: verifier {m['verifier']}, drafter {m['drafter']}, {m['max_tokens']} tokens, "
           f"{'one run per mode' if m.get('repeats', 1) == 1 else 'the median run of ' + str(m['repeats']) + ' per mode'}, the same GGUF files, prompt tokens and stop strings; time is {m.get('time_measured', 'prefill + decode')}. "
           "llama-server was built from the llama-cpp-python sdist by `scripts/build_llama_tools.sh`.", "",
           "| prompt | engine | tokens/s | × qroute plain | acceptance | agreement with qroute plain |",
           "|---|---|---|---|---|---|"]
    for r in native["rows"]:
        out.append(f"| {r['prompt']} | {r['mode']} | {r['tokens_per_s']:.1f} | {_f(r['ratio_vs_qroute_plain'], '{:.2f}')} | "
                   f"{_f(r['acceptance'], '{:.0%}')} | {r['agreement_with_plain']:.0%} |")
    cmds = m.get("llama_server_commands") or {}
    if cmds:
        out += ["", "llama-server commands:", ""] + [f"- {k}: `{v if isinstance(v, str) else ' '.join(map(str, v))}`"
                                                     for k, v in cmds.items()]
    return out + [""]


def cli_speed_section(data: dict) -> list[str]:
    """bench.cli_speed: forced pairs through `qroute run`, each a fresh process."""
    has_ci = all("x_plain_decode_95" in r for r in data["rows"])
    out = ["## Forced pairs through `qroute run`", ""] + made_by(data) + [
           f"`bench/cli_speed.py`: `qroute run --json --pair P -n {data['max_tokens']}`, each run a fresh process "
           f"drafting by this machine's calibration profile, {data['rounds']} alternating rounds. Decode speed is "
           "tokens after the first over the time after the first; end to end includes start-up, load and prefill. "
           "Ratios are per round, the median" + (", its bootstrap 95% interval over rounds" if has_ci else "")
           + " and the range over rounds.", "",
           "| prompt | pair | decode tokens/s | decode × plain" + (" (95%; range)" if has_ci else " (range)")
           + " | end to end × plain | acceptance | same text as plain |",
           "|---|---|---|---|---|---|---|"]
    for r in data["rows"]:
        lo, hi = r["x_plain_decode_range"]
        spread = (f"{r['x_plain_decode_95'][0]:.2f}–{r['x_plain_decode_95'][1]:.2f}; " if has_ci else "") + f"{lo:.2f}–{hi:.2f}"
        out.append(f"| {r['prompt']} | {r['pair']} | {r['decode_tokens_per_s']:.1f} | {r['x_plain_decode']:.2f} "
                   f"({spread}) | {r['x_plain_latency']:.2f} | {_f(r['acceptance'], '{:.0%}')} | "
                   f"{r['same_text_as_plain']:.0%} |")
    spec = [r for r in data["rows"] if r["acceptance"] is not None or "+" in r["pair"]]
    slow = [r for r in spec if r["x_plain_decode"] < 0.95]
    line = (f"{len(spec) - len(slow)} of {len(spec)} speculative rows decode at 0.95x plain or better"
            + _named_rows(slow, "below: ", lambda r: f"{r['prompt']} {r['pair']} {r['x_plain_decode']:.2f}x"))
    if has_ci and spec:
        shown = [r for r in spec if r["x_plain_decode_95"][0] >= 0.95]
        line += f" by the median; {len(shown)} of {len(spec)} by the lower end of its 95% interval"
    out += ["", line + "."]
    again = [r for r in data["rows"] if r["pair"] == "plain again"]
    if again and has_ci:
        # The same plain command twice per round: how far apart two identical runs land here.
        out += ["", "Plain run a second time each round (the measurement's own noise): " + "; ".join(
            f"{r['prompt']} {r['x_plain_decode']:.2f}x (95% {r['x_plain_decode_95'][0]:.2f}–{r['x_plain_decode_95'][1]:.2f})"
            for r in again) + "."]
        sure = [r for r in slow if r["x_plain_decode_95"][1] < 0.95]
        if slow:
            out += ["", f"Of the {len(slow)} rows below 0.95x, {len(sure)} "
                    + ("has its" if len(sure) == 1 else "have their") + " whole 95% interval below it"
                    + _named_rows(sure, "", lambda r: f"{r['prompt']} {r['pair']}")
                    + ("" if len(sure) == len(slow) else
                       "; the intervals of the others reach 0.95x: these runs cannot tell them from plain") + "."]
    return out + [""]


def startup_section(data: dict) -> list[str]:
    """bench.startup: one-shot `qroute run` against a bare llama-cpp-python script."""
    med, ratio = data["median_s"], data["ratio_over_bare"]["qroute_run"]
    lo, hi = ratio["bootstrap_95"]
    return ["## Start-up of a one-shot `qroute run`", ""] + made_by(data) + [
            f"`bench/startup.py`, {data['runs']} alternating rounds: `qroute run --pair smollm2-135m -n 8` "
            f"{med['qroute_run']:.2f} s, a bare llama-cpp-python script doing the same {med['bare_llama_cpp']:.2f} s "
            f"(median), ratio {ratio['median_ratio']:.2f} (95% interval {lo:.2f}–{hi:.2f}); `qroute --help` "
            f"{med['qroute_help']:.2f} s. The target is at most 1.2x: "
            + _startup_verdict(hi, lo) + _variant_sentences(data) + _baseline_sentence(data), ""]


def _startup_verdict(hi: float, lo: float) -> str:
    return "met." if hi <= 1.2 else "not met." if lo > 1.2 else "not shown either way (the interval spans it)."


# bench.startup's runs beside the fresh one, where timed: (key, what is different about it).
_STARTUP_VARIANTS = (
    ("qroute_run_calibrated", "With a calibration profile in the data dir, as after a user's first routed run"),
    ("qroute_run_history", "With {history_runs} runs in the learning store as well (a run folds in only the runs "
                           "logged since the estimates kept beside the store, runs.learned.json)"),
    ("qroute_run_drafting", "The model's n-gram pair in the calibrated data dir (it drafts by the pair's mean "
                            "acceptance for the prompt's task type, moved by its logged runs, without loading the "
                            "quality predictor)"),
)


def _variant_sentences(data: dict) -> str:
    out = ""
    for key, what in _STARTUP_VARIANTS:
        fig = data["ratio_over_bare"].get(key)
        if fig:
            lo, hi = fig["bootstrap_95"]
            out += (f" {what.format(history_runs=data.get('history_runs', '?'))}: {data['median_s'][key]:.2f} s, "
                    f"ratio {fig['median_ratio']:.2f} (95% interval {lo:.2f}–{hi:.2f}); at most 1.2x: "
                    f"{_startup_verdict(hi, lo)}")
    return out


def _baseline_sentence(data: dict) -> str:
    """The same rounds with an earlier qroute_cli (bench.startup --baseline DIR), where timed."""
    base = data["ratio_over_bare"].get("baseline_run")
    if not base:
        return ""
    lo, hi = base["bootstrap_95"]
    label = data.get("baseline_label") or "named in the commands above"
    return (f" In the same rounds the earlier code ({label}) took {data['median_s']['baseline_run']:.2f} s "
            f"(ratio {base['median_ratio']:.2f}, 95% interval {lo:.2f}–{hi:.2f}) and "
            f"{data['median_s']['baseline_help']:.2f} s for `--help`.")


def load_test_section(data: dict) -> list[str]:
    """bench.load_test: qroute serve in front of two local servers, one killed mid-run."""
    st = data["setup"]
    return ["## `qroute serve` under load, one upstream killed", ""] + made_by(data) + [
            f"`bench/load_test.py`: {st['clients']} concurrent clients, {st['requests']} requests of at most "
            f"{st['max_tokens']} tokens, a {st['budget_s']:g} s budget (queue included), `qroute serve` in front of two "
            f"{st['servers']} servers with {st['model']} ({st['server_threads']} thread each); the first server was "
            f"killed after {st['kill_after']:.0%} of the requests.", "",
            "| requests | answered | clear errors | unclear errors | answers/s | p50 | p95 | budget hit rate | with failover |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {data['requests']} | {data['answered']} | {data['clear_errors']} | {data['unclear_errors']} | "
            f"{_f(data['throughput_answers_per_s'], '{:.2f}')} | {_f(data['latency_p50_s'], '{:.2f} s')} | "
            f"{_f(data['latency_p95_s'], '{:.2f} s')} | {_f(data['budget_hit_rate'], '{:.0%}')} | "
            f"{data['answers_with_failover']} |", "",
            "Every request got an answer or a clear error: "
            + ("yes." if data["every_request_answered_or_clear_error"] else "**no**.")
            + " Answers per pair after the kill: "
            + ", ".join(f"{k}: {v}" for k, v in data["answers_after_the_kill_per_pair"].items()) + ".", ""]


def latency_section(lat: dict) -> list[str]:
    """bench.latency_error: the latency model's error per pair, and how fast learning repairs a wrong profile."""
    out = ["## Latency model", ""] + made_by(lat) + [
        f"`bench/latency_error.py`: {len(lat.get('rows', []))} answers of at most {lat.get('max_tokens')} tokens, "
        f"routed with the {lat.get('calibration', '?')} calibration; MAPE = mean absolute percentage error of the "
        "predicted against the measured value (every row is in the JSON).", "",
        "| pair | latency MAPE | second half | given the true length | prefill | per token | length |",
        "|---|---|---|---|---|---|---|"]
    for pair, b in (lat.get("by_pair") or {}).items():
        out.append(f"| {pair} | " + " | ".join(f"{b[k]:.0%}" for k in (
            "mape", "mape_second_half", "mape_given_length", "prefill_mape", "per_token_mape", "length_mape")) + " |")
    out += ["", f"All answers: latency MAPE {lat['mape']:.0%}, {lat['mape_given_length']:.0%} given the true "
            f"length; routing overhead p50 {lat['overhead_ms_p50']:.2f} ms ({lat['overhead_share_p50']:.3%} of "
            "end-to-end latency)."]
    rec = lat.get("recovery")
    if rec:
        after = rec.get("recovered_after_n")
        out += ["", f"Recovery: with every profile cost x{rec['wrong_factor']} and a {rec['budget_s']:.2f} s budget, "
                f"the budget was hit on {rec['hit_rate_learning']:.0%} of {len(rec['learning'])} prompts with "
                f"learning ({'recovered after ' + str(after) + ' prompts' if after is not None else 'not recovered'}) "
                f"and on {rec['hit_rate_control']:.0%} of {len(rec['control'])} without."]
    return out + [""]


def chat_section(chat: dict) -> list[str]:
    """bench.chat_ttft: time to first token on later chat turns with and without KV-cache reuse."""
    settings = chat.get("settings", {})
    out = ["## Chat: time to first token with and without KV reuse", ""] + made_by(chat) + [
        f"`bench/chat_ttft.py`: a {len(settings.get('questions', []))}-turn conversation, answers of at most "
        f"{settings.get('max_tokens')} tokens, median of {settings.get('repeats')} runs over turns 2 and later; "
        "prefilled = prompt tokens evaluated per turn (the rest came from the KV cache).", "",
        "| model | KV reuse | prompt tokens | prefilled | TTFT median | first text median | TTFT last turn |",
        "|---|---|---|---|---|---|---|"]
    for r in chat.get("summary", []):
        out.append(f"| {r['model']} | {'yes' if r['mode'] == 'reuse' else 'no'} | {r['prompt_tokens']:.0f} | "
                   f"{r['prefilled']:.0f} | {r['ttft_ms_median']:.0f} ms | {r['first_text_ms_median']:.0f} ms | "
                   f"{r['last_turn_ttft_ms']:.0f} ms |")
    return out + [""]


def _one_provenance(rows: list[dict]) -> dict | None:
    """The provenance of rows appended by several commands of one run (bench/run_full.sh's decode
    speed lines): the first row's, naming every command (and uncommitted changes if any row had
    them); None where a row records none or the rows come from different commits (then the
    section says it cannot vouch for them)."""
    made = [r.get("provenance") for r in rows]
    if not made or not all(made):
        return None
    commits = list(dict.fromkeys(str(m["commit"]) for m in made))
    if len(commits) > 1 and len({c.split("+")[0] for c in commits}) > 1:
        return None
    commands = list(dict.fromkeys(m["command"] for m in made))
    # One commit, some rows made with uncommitted changes besides: say so.
    commit = next((c for c in commits if "+dirty" in c), commits[0])
    return {**made[0], "commit": commit, "command": " ; ".join(commands)}


# The calibration profiles of a GPU run, as the report labels them and as their files are named.
GPU_PROFILES = (("GPU, every layer", "gpu"), ("the same machine's CPU, 16 threads", "host_cpu"))


def gpu_section(run: dict, profiles: dict, engines: dict, cli: dict | None, heading: str,
                folder: str = "gpu") -> list[str]:
    """bench/gpu_run.sh on a GPU machine: the build, the cost curves, the engine and forced pairs."""
    m, b = run["machine"], run["build"]
    out = [heading, "", run["what"][0].upper() + run["what"][1:] + ".", "",
           f"Made by commit `{run['commit'][:12]}` (engine `{run['engine']}`) on {run['date']}, {m['gpu']}, "
           f"{m['cuda']}, {m['cpu']} with {m['cores']} cores: the commands of `bench/gpu_run.sh` "
           f"(`bench/results/{folder}/run.json`). Not measured: {run['not_measured']}.", "",
           f"Build: {b['how']} (`{b['cmake_args']}`): "
           f"CUDA kernels for this GPU alone ({b['cuda_architectures']}), {b['seconds']} s on {b['parallel_jobs']} "
           f"jobs" + (f"; it differs from setup's: {b['differs_from_setup']}" if b.get("differs_from_setup") else "")
           + f". Tests: {run['tests']}.", "",
           "Cost curves (`qroute calibrate`, ms): one decode step, then the verifier's batch of n tokens.", "",
           "| setup | decode | n = 2 | n = 3 | n = 5 | n = 9 | prefill tokens/s | n-gram step |",
           "|---|---|---|---|---|---|---|---|"]
    for label, prof in profiles.items():
        mod = prof["models"]["smollm2-135m"]
        v = mod["verify_s"]
        out.append(f"| {label} | {mod['decode_s'] * 1e3:.2f} | {v[0] * 1e3:.2f} | {v[1] * 1e3:.2f} | "
                   f"{v[3] * 1e3:.2f} | {v[7] * 1e3:.2f} | {mod['prefill_tps']:,.0f} | {prof['ngram_s'] * 1e6:.0f} us |")
    out += ["", "`bench.engine --quick` in one process (64 tokens, median of 2):", "",
            "| setup | prompt | mode | tokens/s | × qroute plain | limit (k) | agreement with plain |",
            "|---|---|---|---|---|---|---|"]
    for label, eng in engines.items():
        for r in eng["rows"]:
            limit = _limit(r)
            out.append(f"| {label} | {r['prompt']} | {r['mode']} | {r['tokens_per_s']:.1f} | "
                       f"{r['ratio_vs_qroute_plain']:.2f} | {limit} | {r['agreement_with_plain']:.0%} |")
    if cli:
        out += [""] + cli_speed_section(cli)[2:-1]
    by_place = {prof["machine"]["gpu_layers"] != 0: prof["models"].get("smollm2-135m") for prof in profiles.values()}
    gpu, cpu = by_place.get(True), by_place.get(False)
    if gpu and cpu:
        out += ["", f"On the GPU a decode step is {cpu['decode_s'] / gpu['decode_s']:.1f}x faster than on the "
                f"16-thread CPU, but a batch of two costs {gpu['verify_s'][0] / gpu['decode_s']:.1f}x a decode step "
                f"there (the CPU: {cpu['verify_s'][0] / cpu['decode_s']:.1f}x), so a draft pays only at higher "
                "acceptance: the cost-aware draft length reads this from the profile."]
    agree = [r["agreement_with_plain"] for eng in engines.values() for r in eng["rows"] if "qroute ngram" in r["mode"]]
    if agree:
        out += ["", f"Greedy speculative answers agreed with plain answers on {min(agree):.0%}–{max(agree):.0%} of "
                "their tokens: batched and single-token logits differ in near-ties (see 'exact' in README.md), "
                "more often with the GPU's kernels than with the CPU's."]
    return out + [""]


def made_by(data) -> list[str]:
    """A section's provenance line: the commit, date, machine, threads and command its results
    file records, or a warning that the file does not say, so a stale section is not read as fresh."""
    meta = (data or {}) if isinstance(data, dict) else {}
    meta = meta.get("provenance") or meta.get("meta") or meta
    if not meta.get("commit"):
        return ["**Provenance not recorded**: this section's results file predates the commit, "
                "thread and command fields, so it was made by older code than this report; "
                "re-run it with `bash bench/run_full.sh` before relying on it.", ""]
    threads = meta.get("threads", "?")
    machine = meta.get("cpu") or meta.get("machine", "?")
    detail = meta.get("cpu_detail")
    if isinstance(machine, dict):
        machine, detail = machine.get("cpu", "?"), machine.get("cpu_detail")
    if detail:  # a model name like 'AMD EPYC' can name hosts of other speeds
        machine = f"{machine} ({detail})"
    command = meta.get("command")
    if command is None and isinstance(meta.get("commands"), dict):  # bench.startup names each command it timed
        command = " ; ".join(" ".join(map(str, c)) if isinstance(c, list) else str(c) for c in meta["commands"].values())
    dirty = "+dirty" in str(meta["commit"])
    profile = f", calibration profile `{meta['calibration_profile']}`" if meta.get("calibration_profile") else ""
    out = [f"Made by commit `{str(meta['commit'])[:12]}`{' (with uncommitted changes)' if dirty else ''} on "
           f"{meta.get('date') or meta.get('time', '?')}, {machine}, "
           f"threads {'as the load left them' if threads is None else threads}{profile}: `{command or '?'}`.", ""]
    if meta.get("engine") and meta["engine"] != engine_revision():
        out += [f"**Older engine code**: this section ran engine revision `{meta['engine']}`; the engine is now "
                f"`{engine_revision()}` (a hash of qroute_cli/generation, speculation.py and tuning.py), so its "
                "figures may not hold for the current code. Re-run it with `bash bench/run_full.sh`.", ""]
    return out


def main() -> None:
    summary = _load("summary.json")
    rows = _load("strategies.json") or []
    engine = _load("engine.json")
    lat = _load("latency_error.json")
    chat = _load("chat_ttft.json")
    budget = _load("budget_hit.json")
    overhead = _load("overhead.json")
    native = _load("native.json")
    cli_speed = _load("cli_speed.json")
    startup = _load("startup.json")
    load_test = _load("load_test.json")
    if rows:
        redraw_plots(rows)
    speed = _load_lines("decode_speed.jsonl")
    builds = _load_lines("build_speed.jsonl")
    lines = ["# qroute bench report", "",
             "Regenerate with `bash bench/run_full.sh` (runs the benches, then `python -m bench.write_report`).",
             "Each section names the results file it is written from and what made that file: the commit, "
             "date, machine, threads and command.", ""]
    lines += frontier_section(HERE / "results" / "frontier_v2.md")
    if summary:
        cfg = summary.get("config", {})
        lines += ["## Routing: quality vs. latency", ""] + made_by(summary) + [
                  f"{summary['n_prompts']} prompts ({cfg.get('limit')} per task: {', '.join(summary['tasks'])}), "
                  f"every prompt run once on every pair ({len(cfg.get('pairs', []))} pairs), strategies compared on "
                  f"the same result matrix. Quality: {_named(QUALITY, summary['tasks'])}. "
                  "QualityRoute's points come from a sweep of budgets; cost-only routing (fastest predicted "
                  "pair) is a single point, so 'at matched latency' compares QualityRoute's best point "
                  "within that latency. The matrix cache lets a larger `--limit` extend the same run.", "",
                  "| scope | hypervolume vs best static | quality vs cost-only @ matched latency | APGR | oracle quality | n |",
                  "|---|---|---|---|---|---|"]
        scopes = [("all", summary)] + list(summary.get("by_task", {}).items())
        for scope, s in scopes:
            lines.append(f"| {scope} | {_f(s['hypervolume_ratio_vs_best_static'])} | "
                         f"{_f(s['quality_gain_vs_cost_at_matched_latency'], '{:+.1%}')} | {_f(s['apgr'])} | "
                         f"{_f(s.get('oracle_quality'))} | {s['n_prompts']} |")
        lines += ["", targets_sentence(summary)]
        abl = summary.get("ablation", {})
        if abl:
            lines += ["", "### Ablations (all tasks)", ""] + ablation_table(summary)
            lines += ["", "- `quality [prior]`: per-model constant qualities from models.toml instead of a predictor.",
                      "- `quality [NAME]`: another predictor file from `python -m predictor.train` "
                      "(`length-only`: prompt length alone; `minilm`: the MiniLM sentence-encoder model).",
                      "- `quality+online`: every chosen run of the matrix fed back into a fresh learning store "
                      "over a shuffled prompt stream (replayed).",
                      "- `quality+online (live)`: the same loop run for real at one budget (below); a single "
                      "point, so its hypervolume is not comparable with a sweep's: compare it with the replay "
                      "at the same budget."]
        live = summary.get("live_online")
        if live:
            fh, sh, rp = live["first_half"], live["second_half"], live.get("replay_at_same_budget") or {}
            lines += ["", "### Online learning, live", "",
                      f"QualityRoute at a {live['budget_s']:g} s budget over a shuffled stream of the same prompts, "
                      "each routed, run through llama.cpp, scored and recorded into a fresh learning store "
                      "that starts from the calibrated profile and no history.", "",
                      "| part of the stream | prompts | latency error (MAPE) | budget hit rate |", "|---|---|---|---|",
                      f"| first half | {fh['n']} | {_f(fh['latency_mape'], '{:.1%}')} | {_f(fh['hit_rate'], '{:.0%}')} |",
                      f"| second half | {sh['n']} | {_f(sh['latency_mape'], '{:.1%}')} | {_f(sh['hit_rate'], '{:.0%}')} |",
                      "", f"Live: quality {live['mean_quality']:.3f}, mean latency {live['mean_latency_s']:.2f} s, "
                      f"hit rate {live['hit_rate']:.0%}. Replayed on the matrix at the same budget: quality "
                      f"{_f(rp.get('mean_quality'))}, mean latency {_f(rp.get('mean_latency_s'), '{:.2f}')} s, "
                      f"hit rate {_f(rp.get('hit_rate'), '{:.0%}')}."]
        lines += ["", f"Best static pair (by hypervolume): `{summary['best_static_pair']}`; fastest: "
                  f"`{summary['weak_pair']}`; best quality: `{summary['strong_pair']}`.", "",
                  "![all tasks](results/pareto_all.png)", ""]
        for task in summary.get("by_task", {}):
            lines += [f"![{task}](results/pareto_{task}.png)"]
        cells = _load("matrix.json") or []
        if cells:
            lines += ["", "### Every pair on every task", "",
                      f"{_named(METRICS, summary['tasks'], '; ')}. 'Cut at cap': "
                      "answers that reached the task's token cap.", ""] + pairs_section(cells)
        lines += ["", "### Every strategy (all tasks)", ""] + strategies_section(rows, "all") + [""]
        ra = summary.get("routing_analysis", [])
        if ra:
            lines += ["### What QualityRoute chose, by task and prompt length, and why", "",
                      "Prompt length in characters: short < 200, medium < 600, long. 'Why' counts the kind of "
                      "reason the router gave (`--explain` prints it in full for a single prompt).", "",
                      "| budget | task | prompt length | choices | why |", "|---|---|---|---|---|"]
            for r in ra:
                lines.append(f"| {r['budget']} | {r['task']} | {r['length']} | "
                             + ", ".join(f"{k}: {v}" for k, v in r["choices"].items()) + " | "
                             + ", ".join(f"{k}: {v}" for k, v in r.get("why", {}).items()) + " |")
            lines.append("")
    for name in WIDE_RUNS:
        lines += wide_run_section(name)
    if engine:
        lines += engine_section(engine)
    if native:
        lines += native_section(native)
    if cli_speed:
        lines += cli_speed_section(cli_speed)
    if startup:
        lines += startup_section(startup)
    idle = {}  # per GPU run: n-gram on the write-code prompt, where the curve says no draft pays
    for folder, heading in (("gpu", "## GPU: smollm2-135m on one NVIDIA H200"),
                            ("gpu2", "### The same, after the n-gram drafter's index")):
        gpu_run = _load(f"{folder}/run.json")
        if not gpu_run:
            continue
        profiles = {label: _load(f"{folder}/profile_{name}.json") for label, name in GPU_PROFILES}
        engines = {label: _load(f"{folder}/engine_{name}.json") for label, name in
                   (("GPU", "gpu"), ("CPU", "host_cpu"))}
        lines += gpu_section(gpu_run, {k: v for k, v in profiles.items() if v},
                             {k: v for k, v in engines.items() if v}, _load(f"{folder}/cli_speed_gpu.json"), heading, folder)
        idle[folder] = [r for r in (engines.get("GPU") or {}).get("rows", [])
                        if r["mode"] == "qroute ngram" and r.get("best_draft_len") == 0]
    if idle.get("gpu") and idle.get("gpu2"):
        a, b = idle["gpu"][0], idle["gpu2"][0]
        lines += [f"Where the curve says no draft pays ({a['prompt']}, limit 1.00), the n-gram mode ran at "
                  f"{a['ratio_vs_qroute_plain']:.2f}x plain before the index and {b['ratio_vs_qroute_plain']:.2f}x "
                  "after it: the lookup's cost per step was not what cost it. What remains are the probes' verify "
                  "batches and the slower plain steps after each batch, which later engine revisions price in "
                  "(settle_s in the profile); that is tested on a simulated GPU, not yet measured on one.", ""]
    if speed:
        lines += ["## Decode speed per llama.cpp build and thread setting", ""] + made_by(_one_provenance(speed)) + [
                  "`bench/decode_speed.py` (128-token prompt, 64 generated tokens, median of 3); `hog` = another "
                  "process keeps one core busy meanwhile.", "",
                  "| setting | model | threads | hog | OMP_WAIT_POLICY | prompt tok/s | generation tok/s |",
                  "|---|---|---|---|---|---|---|"]
        for r in speed:
            lines.append(f"| {r['label']} | {r['model']} | {r['threads']} | {'yes' if r['hog'] else 'no'} | "
                         f"{r['omp_wait_policy'] or '–'} | {r['prompt_tps']:.1f} | {r['gen_tps']:.1f} |")
        lines += [""] + busy_core_sentences(speed) + [""]
    if builds:
        lines += ["### llama.cpp build", "",
                  "The same script on two builds of llama-cpp-python 0.3.36, one after the other on a quiet machine: "
                  "the build of scripts/setup.sh, and a native build with the AMX kernels compiled out "
                  "(`CMAKE_ARGS=\"-DGGML_NATIVE=ON -DCMAKE_C_FLAGS='-mno-amx-tile -mno-amx-int8 -mno-amx-bf16' "
                  "-DCMAKE_CXX_FLAGS=...\"`, installed with `pip install --target` and put first on PYTHONPATH).", "",
                  "| build | model | prompt tok/s | generation tok/s |", "|---|---|---|---|"]
        for r in builds:
            lines.append(f"| {r['label']} | {r['model']} | {r['prompt_tps']:.1f} | {r['gen_tps']:.1f} |")
        lines += ["", build_sentence(builds), ""]
    if lat:
        lines += latency_section(lat)
    if chat:
        lines += chat_section(chat)
    if overhead:
        lines += overhead_section(overhead)
    if budget:
        lines += budget_hit_section(budget)
    if load_test:
        lines += load_test_section(load_test)
    (HERE / "REPORT.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'REPORT.md'}")


if __name__ == "__main__":
    main()
