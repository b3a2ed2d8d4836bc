"""The bench: metric functions on known values, frontier math, strategies on a hand-made
matrix, and the whole pipeline end to end on the fake backend and on smollm2-135m."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import qroute_cli

from conftest import FAKE_CONFIG, require_model
from qroute_cli.evaluation import frontier, metrics, strategies
from qroute_cli.evaluation.matrix import Cell, Matrix
from qroute_cli.evaluation.tasks import TASKS, Item


def test_metrics_known_values():
    assert metrics.gsm8k_em("So 3 + 4 = 7. The answer is 7.", "7") == 1.0
    assert metrics.gsm8k_em("The answer is 1,250.", "1250") == 1.0
    assert metrics.gsm8k_em("It is 8", "7") == 0.0
    assert metrics.gsm8k_em("It is " + "9" * 400, "7") == 0.0  # a runaway number (inf as a float) scores 0
    assert metrics.nq_em("The Beatles", ["Beatles"]) == 1.0  # articles dropped
    assert metrics.token_f1("paris france", "paris") == pytest.approx(2 / 3)
    assert metrics.rouge_l("the cat sat", "the cat sat") == pytest.approx(1.0)
    assert metrics.rouge_l("dog", "the cat sat") == 0.0
    assert metrics.bleu("the cat sat on the mat today", "the cat sat on the mat today") == pytest.approx(1.0)
    assert metrics.bleu("completely different words here", "the cat sat on the mat today") < 0.1


def test_frontier_math():
    pts = [(1.0, 0.2), (2.0, 0.5), (3.0, 0.4), (4.0, 0.9)]
    assert frontier.pareto(pts) == [(1.0, 0.2), (2.0, 0.5), (4.0, 0.9)]
    # Staircase area under reference latency 5: 4*0.2 + 3*0.3 + 1*0.4
    assert frontier.hypervolume(pts, 5.0) == pytest.approx(0.8 + 0.9 + 0.4)
    assert frontier.quality_at(pts, 2.5) == 0.5 and frontier.quality_at(pts, 0.5) is None
    # A router that jumps straight to the strong quality recovers the whole gap.
    assert frontier.apgr([(1.0, 0.9)], weak=(1.0, 0.2), strong=(4.0, 0.9)) == pytest.approx(1.0)
    assert frontier.apgr([(1.0, 0.2)], weak=(1.0, 0.2), strong=(4.0, 0.9)) == pytest.approx(0.0)


def _cell(q, lat, text=""):
    return Cell(quality=q, scores={"quality": q}, latency_s=lat, ttft_s=0.01, tokens=10, prompt_tokens=5,
                drafted=0, accepted=0, text=text)


@pytest.fixture
def tiny_matrix():
    items = [Item("nq", f"q{i}", f"question {i}", ["x"]) for i in range(4)]
    m = Matrix(items, ["fast", "slow"])
    for i, it in enumerate(items):
        m.cells[(it.id, "fast")] = _cell(1.0 if i < 2 else 0.0, 1.0, "x")
        m.cells[(it.id, "slow")] = _cell(1.0, 5.0, "x")
    return m, items


def test_oracle_uses_hindsight_within_budget(tiny_matrix):
    m, items = tiny_matrix
    free = strategies.oracle(m, items, None)
    assert free.choices == ["fast", "fast", "slow", "slow"] and free.mean_quality == 1.0
    tight = strategies.oracle(m, items, 2.0)
    assert tight.choices == ["fast"] * 4 and tight.hit_rate == 1.0


def test_bandit_learns_the_better_reward(tiny_matrix):
    m, items = tiny_matrix
    items = items * 10
    cheap = strategies.bandit(m, items, lam=1.0, explore=0.0)
    assert cheap.choices.count("fast") > 30  # a high latency price favours the fast pair
    free = strategies.bandit(m, items, lam=0.0, explore=0.0)
    assert free.choices.count("slow") > 30  # no price: the better pair


def test_ensemble_counts_every_verifier(tiny_matrix):
    m, items = tiny_matrix
    e = strategies.ensemble(m, items, ["fast", "slow"])
    assert all(lat == 6.0 for lat in e.latency)


def _bench_cli(*args, config=FAKE_CONFIG):
    cmd = [sys.executable, "-m", "qroute_cli"] + (["--config", str(config)] if config else []) + ["bench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=os.environ.copy())


def test_bench_end_to_end_on_fake_backend(tmp_path):
    out = tmp_path / "out"
    shipped = Path(qroute_cli.__file__).parent / "data" / "predictor" / "predictor.onnx"
    r = _bench_cli("--limit", "2", "--pairs", "fake-big,fake-small,fake-big+ngram", "--out", str(out), "--json",
                   "--scorer", f"copy={shipped}")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    for key in ("hypervolume_ratio_vs_best_static", "quality_gain_vs_cost_at_matched_latency", "apgr",
                "n_prompts", "tasks"):
        assert key in summary
    # Every task by default, code included (its fake answers score 0 in the sandbox).
    assert summary["n_prompts"] == 8 and summary["tasks"] == ["code", "gsm8k", "nq", "wp"]
    assert summary["provenance"]["code_sandbox"].startswith("rlimits, audit guard")
    rows = json.loads((out / "strategies.json").read_text())
    strategies_seen = {r["strategy"] for r in rows}
    assert {"static", "oracle", "random", "bandit", "ensemble", "cost", "quality", "quality+online",
            "quality [prior]", "quality [copy]", "quality+online (live)"} <= strategies_seen
    assert {"quality [prior]", "quality [copy]", "quality+online", "quality+online (live)"} <= set(summary["ablation"])
    # The live loop ran every prompt once, in stream order, and learned from each run.
    live = summary["live_online"]
    assert live["first_half"]["n"] + live["second_half"]["n"] == 8
    assert 0.0 <= live["hit_rate"] <= 1.0 and live["mean_latency_s"] > 0
    trace = json.loads((out / "live_stream.json").read_text())[0]["stream"]
    assert len(trace) == 8 and all(r["observed_latency_s"] > 0 and r["predicted_latency_s"] for r in trace)
    live_row = next(r for r in rows if r["strategy"] == "quality+online (live)" and r["task"] == "all")
    assert sum(live_row["choices"].values()) == 8
    assert (out / "pareto_all.png").stat().st_size > 1000
    analysis = json.loads((out / "summary.json").read_text())["routing_analysis"]
    assert analysis and all(sum(r["why"].values()) == sum(r["choices"].values()) for r in analysis)
    made_by = json.loads((out / "summary.json").read_text())["provenance"]
    assert {"commit", "date", "machine", "threads", "command"} <= set(made_by)
    assert made_by["commit"] and made_by["machine"] and "bench" in made_by["command"]
    # What the user ran in between does not move the figures: the bench routes with an empty
    # learning store (and the second run is served from the cache). Here the user's store says
    # every fake-big and fake-small run took 50 s.
    import time

    from qroute_cli.routing.latency import current_machine
    from qroute_cli.routing.runlog import RunRecord, Store

    with Store() as user_store:
        for i in range(40):
            pair = ("fake-big", "fake-small")[i % 2]
            user_store.append(RunRecord(
                ts=time.time() + 1, machine=current_machine().key, prompt_hash=f"h{i}", task="qa",
                prompt_chars=40, pair=pair, verifier=pair, drafter="none", strategy="quality", scorer="prior",
                observed_latency_s=50.0, ttft_s=5.0, prompt_tokens=20, output_tokens=40,
                predicted_latency_s=0.5, predicted_tokens=40))
    again = _bench_cli("--limit", "2", "--pairs", "fake-big,fake-small,fake-big+ngram", "--json", "--no-live")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["n_prompts"] == 8
    for key in ("hypervolume_ratio_vs_best_static", "quality_gain_vs_cost_at_matched_latency", "apgr"):
        assert second[key] == summary[key], key


def test_bench_threads_fixes_the_count_it_records(tmp_path):
    """--threads holds a long run to one thread count (cells are cached per count) and says so."""
    r = _bench_cli("--limit", "1", "--tasks", "nq", "--pairs", "fake-big,fake-small", "--no-live", "--json",
                   "--bootstrap", "0", "--threads", "1")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["provenance"]["threads"] == 1


def test_bench_rejects_bad_scorer_option(tmp_path):
    r = _bench_cli("--limit", "1", "--pairs", "fake-big,fake-small", "--scorer", "nofile")
    assert r.returncode == 2 and "NAME=FILE.onnx" in r.stderr
    r = _bench_cli("--limit", "1", "--pairs", "fake-big,fake-small", "--scorer", f"x={tmp_path / 'missing.onnx'}")
    assert r.returncode == 2 and "no such file" in r.stderr
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    r = _bench_cli("--limit", "1", "--pairs", "fake-big,fake-small", "--scorer", f"x={bad}", "--no-live")
    said = " ".join(r.stderr.split())
    assert r.returncode == 2 and "cannot be loaded" in said and "Traceback" not in said
    assert "running prompts" not in said  # refused before any model ran


def test_bench_code_task_end_to_end_on_fake_backend(tmp_path):
    """`--tasks code`: the first HumanEval problems of the bench side, every answer's tests run
    in the sandbox (the fake models write no code: pass@1 is 0, not an error); the matrix
    names each problem by id and carries none of its tests."""
    from qroute_cli.evaluation import humaneval

    out = tmp_path / "out"
    r = _bench_cli("--tasks", "code", "--limit", "2", "--pairs", "fake-big,fake-small", "--out", str(out),
                   "--json", "--no-live", "--bootstrap", "0", "--cache", str(tmp_path / "cache.jsonl"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["tasks"] == ["code"] and summary["n_prompts"] == 2
    assert summary["provenance"]["code_sandbox"]  # what the sandbox isolated the code with
    cells = json.loads((out / "matrix.json").read_text())
    bench_side = [p.task_id for p in humaneval.load("bench")[:2]]
    assert [c["item"] for c in cells] == [i for i in bench_side for _ in ("fake-big", "fake-small")]
    assert all(c["task"] == "code" and c["scores"] == {"pass": 0.0, "quality": 0.0, "correct": 0.0} for c in cells)
    assert "def check(" not in (out / "matrix.json").read_text()
    assert "def check(" not in (tmp_path / "cache.jsonl").read_text()


def test_code_task_scores_pass_at_1_in_the_sandbox(monkeypatch):
    """A bench item's reference is what its tests need: the canonical solution scores 1 (as a
    chat answer and as a bare body), a wrong one 0, and a sandbox that cannot run is an error
    that says so, not a 0."""
    from qroute_cli.errors import QrouteError
    from qroute_cli.evaluation import humaneval, sandbox
    from qroute_cli.evaluation.tasks import load

    code = TASKS["code"]
    items = load("code")
    assert len(items) == 79 and all(humaneval.side(it.id) == "bench" for it in items)
    assert load("code", Path("/nonexistent")) == items  # --data-dir leaves code to the shipped file
    it = items[0]
    problem = it.reference
    assert it.question == problem.prompt and it.prompt == problem.chat_prompt
    answer = f"Here it is:\n```python\n{problem.prompt}{problem.canonical_solution}\n```"
    assert code.score(answer, problem) == {"pass": 1.0, "quality": 1.0, "correct": 1.0}
    assert code.score(problem.canonical_solution, problem)["quality"] == 1.0
    assert code.score("I would rather not.", problem) == {"pass": 0.0, "quality": 0.0, "correct": 0.0}
    assert code.quality_name == "pass@1" and code.max_tokens == humaneval.MAX_TOKENS

    def broken(source, limits=sandbox.Limits()):
        return sandbox.Outcome("error", "no interpreter", "", 0.0)

    monkeypatch.setattr(sandbox, "run_python", broken)
    with pytest.raises(QrouteError, match="could not run the tests of .*no interpreter"):
        code.score(answer + "\n# not scored before", problem)


def test_every_task_is_benched_by_default_and_named_in_the_help():
    import inspect

    from qroute_cli.cli.commands.bench import bench
    from qroute_cli.evaluation.bench import BenchConfig

    assert BenchConfig().tasks == tuple(TASKS) and "code" in TASKS
    params = inspect.signature(bench).parameters
    assert all(name in params["tasks"].default.help for name in TASKS)
    assert "code" in params["data_dir"].default.help


def test_the_report_names_pass_at_1_for_code():
    from bench import write_report

    cell = {"task": "code", "pair": "a", "scores": {"pass": 1.0, "quality": 1.0, "correct": 1.0}, "quality": 1.0,
            "latency_s": 2.0, "tokens": 100, "drafted": 0, "accepted": 0}
    rows = write_report.pairs_section([cell, {**cell, "scores": {"pass": 0.0}, "quality": 0.0}])
    assert rows[-1].startswith("| code | a | pass@1 0.500 | 0.500 |")
    assert "HumanEval pass@1" in write_report._named(write_report.QUALITY, ["code", "gsm8k"])


def test_bench_rejects_unknown_task():
    r = _bench_cli("--tasks", "gsm8kk", "--limit", "1", "--pairs", "fake-big,fake-small")
    assert r.returncode == 2 and "Did you mean 'gsm8k'" in r.stderr


@pytest.mark.real
def test_bench_on_smollm(tmp_path):
    require_model("smollm2-135m")
    r = _bench_cli("--limit", "1", "--tasks", "nq,gsm8k", "--pairs", "smollm2-135m,smollm2-135m+ngram",
                   "--json", config=None)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n_prompts"] == 2
    assert s["live_online"]["mean_latency_s"] > 0  # the live loop ran the real model


def test_a_capped_route_is_scored_on_the_cut_answer():
    """When the router caps tokens, the bench cuts the measured answer and scores it again."""
    text = "We add 12 and 30 apples, then " + "we check it. " * 10 + "The answer is 42."
    cell = Cell(quality=1.0, scores={"quality": 1.0}, latency_s=11.0, ttft_s=1.0, tokens=100, prompt_tokens=20,
                drafted=50, accepted=40, text=text)
    assert TASKS["gsm8k"].score(text, "42")["quality"] == 1.0
    cut = strategies.capped(cell, 20, "gsm8k", "42")
    assert cut.tokens == 20 and cut.latency_s == pytest.approx(1.0 + 10.0 * 0.2)
    assert cut.quality == 0.0 and len(cut.text) < len(text) / 4  # the final answer was cut off
    assert strategies.capped(cell, None, "gsm8k", "42") is cell
    assert strategies.capped(cell, 400, "gsm8k", "42") is cell


def _bench_summary(home: Path, monkeypatch) -> dict:
    """The bench on the fake models in-process, from an empty data directory: every figure
    it reports, less the wall-clock time it took and the calibration profile's identity (the
    profile carries the time it was measured)."""
    import io
    from dataclasses import replace

    from rich.console import Console

    from qroute_cli.config import load_registry
    from qroute_cli.evaluation.bench import BenchConfig, run_bench
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.routing.scoring import PriorScorer

    monkeypatch.setenv("QROUTE_HOME", str(home))
    pairs = ("fake-big", "fake-small", "fake-big+ngram", "fake-big+small")
    reg = load_registry(FAKE_CONFIG, include_user=False)
    reg = replace(reg, pairs={p: reg.pairs[p] for p in pairs})
    cfg = BenchConfig(limit=2, pairs=pairs)
    with ModelPool(reg) as pool, strategies.fresh_router(reg, strategy="quality", pool=pool, seed=0,
                                                          console=Console(file=io.StringIO())) as router:
        res = run_bench(pool, cfg, home / "matrix.jsonl", router=router, scorers={"prior": PriorScorer(reg)})
    summary = dict(res.summary)
    summary.pop("bench_seconds")
    summary["provenance"] = {k: v for k, v in summary["provenance"].items() if k != "calibration_profile"}
    # How busy the real machine was during each cell is a reading of the machine, not a figure.
    summary["matrix_cells"] = {kind: {k: v for k, v in c.items() if k != "others_cores"}
                               for kind, c in summary["matrix_cells"].items()}
    cells = {f"{k[0]}|{k[1]}": (c.latency_s, c.ttft_s, c.tokens, c.drafted, c.accepted, c.text)
             for k, c in res.matrix.cells.items()}
    runs = [(o.strategy, o.setting, o.choices, o.latency) for o in res.outcomes]
    return {"summary": summary, "cells": cells, "outcomes": runs}


def test_bench_on_fakes_does_not_depend_on_time_or_load(tmp_path, monkeypatch):
    """Fake models keep simulated time, so calibration, the matrix, routing and the live loop
    give the same figures when the machine is slow or busy: here the wall clock jumps by a
    random amount at every reading during the second run."""
    import random
    import time

    first = _bench_summary(tmp_path / "a", monkeypatch)
    jumps = random.Random(7)
    real_perf, real_mono = time.perf_counter, time.monotonic
    drift = [0.0]

    def jumpy(real):
        def clock():
            drift[0] += jumps.uniform(0.0, 0.2)
            return real() + drift[0]
        return clock

    with monkeypatch.context() as m:
        m.setattr(time, "perf_counter", jumpy(real_perf))
        m.setattr(time, "monotonic", jumpy(real_mono))
        second = _bench_summary(tmp_path / "b", monkeypatch)
    assert drift[0] > 1.0  # the perturbed clock was read
    assert second["cells"] == first["cells"]
    assert second["outcomes"] == first["outcomes"]
    assert second["summary"] == first["summary"]
    assert first["summary"]["live_online"]["mean_latency_s"] > 0


def test_outcome_variants_are_fields_and_keep_their_labels(tiny_matrix):
    """Another scorer, online learning and a live run are fields of an Outcome; the names in
    tables, JSON rows and the ablation summary are made from them."""
    from dataclasses import replace

    m, items = tiny_matrix
    plain = replace(strategies.static(m, items, "fast"), strategy="quality")
    variants = {
        "quality": plain,
        "quality [prior]": replace(plain, scorer="prior"),
        "quality+online": replace(plain, online=True),
        "quality+online (live)": replace(plain, online=True, live=True),
    }
    assert {label: o.label for label, o in variants.items()} == {label: label for label in variants}
    assert [o.is_plain_quality for o in variants.values()] == [True, False, False, False]


def _fake_bench_router(fake_registry, pairs):
    import io
    from dataclasses import replace

    from rich.console import Console

    reg = replace(fake_registry, pairs={p: fake_registry.pairs[p] for p in pairs})
    return strategies.fresh_router(reg, strategy="quality", seed=0, console=Console(file=io.StringIO()))


@pytest.fixture
def fake_matrix():
    """Every shipped task's first prompt, answered by fake-big (slow) and fake-small (fast)."""
    from qroute_cli.evaluation.tasks import load

    items = [load(task)[0] for task in TASKS]
    m = Matrix(items, ["fake-big", "fake-small"])
    for it in items:
        m.cells[(it.id, "fake-big")] = _cell(0.9, 4.0, "x")
        m.cells[(it.id, "fake-small")] = _cell(0.3, 1.0, "x")
    return m, items


def test_routing_without_a_budget_is_every_pair_fitting(fake_matrix, fake_registry):
    m, items = fake_matrix
    with _fake_bench_router(fake_registry, m.pairs) as router:
        free = strategies.routed(m, items, router, "cost", None, "fastest predicted")
        huge = strategies.routed(m, items, router, "cost", 1e9)
        quality = strategies.routed(m, items, router, "quality", None)
    assert free.budget_s is None and free.hit_rate is None and free.setting == "fastest predicted"
    assert free.choices == huge.choices  # no budget decides as an unreachable one would
    assert quality.setting == "quality" and quality.budget_s is None
    assert not any(why.startswith("nothing fits") for why in free.extra["why"] + quality.extra["why"])


def test_a_router_choice_outside_the_matrix_is_an_error(fake_matrix, fake_registry):
    from qroute_cli.errors import QrouteError

    m, items = fake_matrix
    with _fake_bench_router(fake_registry, ["fake-big", "fake-small", "fake-other"]) as router:
        with pytest.raises(QrouteError, match="fake-other"):
            strategies.routed(m, items, router, "static:fake-other", None)


def test_every_task_scores_prompts_and_agrees_in_one_object():
    """The task table: one prompt format, cap, score and consensus per data set."""
    assert list(TASKS) == ["gsm8k", "nq", "wp", "code"]
    assert TASKS["nq"].prompt("  who wrote hamlet ") == "Who wrote hamlet?\nAnswer in a few words only."
    assert TASKS["gsm8k"].prompt("2 + 2?").startswith("2 + 2?\nSolve it step by step")
    for name, task in TASKS.items():
        assert task.name == name and 16 <= task.max_tokens <= 1024
    gsm8k = {"a": "The answer is 7.", "b": "The answer is 8.", "c": "So 7. The answer is 7."}
    assert TASKS["gsm8k"].consensus(gsm8k) == "a"  # the first answer with the most common number
    assert TASKS["gsm8k"].consensus({"a": "no number", "b": "none"}) == "a"
    nq = {"a": "Lyon", "b": "Paris, France", "c": "in Paris"}
    assert TASKS["nq"].consensus(nq) == "b"  # agrees with another answer (ties: the first)
    from qroute_cli.errors import UsageError
    from qroute_cli.evaluation import tasks

    with pytest.raises(UsageError) as exc:
        tasks.get("gsm8kk")
    assert "Did you mean 'gsm8k'" in exc.value.hint


def test_most_chosen_breaks_ties_by_pair_name():
    """The summary's 'most chosen' column is the same on every run: a tie goes to the first
    name, whatever order the choices (or a set of them) come in."""
    import io
    import itertools
    from types import SimpleNamespace

    from rich.console import Console

    from qroute_cli.evaluation.report import most_chosen, summary_table

    choices = ["b+x", "a+x", "c+x", "b+x", "a+x"]
    for order in itertools.permutations(choices):
        assert most_chosen(list(order)) == ("a+x", 2)
    assert most_chosen(["c+x", "c+x", "a+x"]) == ("c+x", 2)  # the count decides before the name

    outcome = strategies.Outcome("quality", "5s", ["z+y", "a+b", "z+y", "a+b"], [1.0] * 4, [1.0] * 4, 5.0)
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(SimpleNamespace(outcomes=[outcome])))
    assert "a+b (2/4)" in out.getvalue()


def test_report_sections_say_what_made_them_or_warn():
    """A section whose results file records no commit is flagged, never shown as fresh."""
    from bench.write_report import made_by

    assert "Provenance not recorded" in made_by({"rows": []})[0]
    assert "Provenance not recorded" in made_by(None)[0]
    line = made_by({"provenance": {"commit": "abc123", "date": "2026-11-30", "machine": "cpu",
                                   "threads": 2, "command": "qroute bench"}})[0]
    assert "abc123" in line and "threads 2" in line and "qroute bench" in line
    line = made_by({"provenance": {"commit": "abc123", "threads": 2, "command": "qroute bench",
                                   "calibration_profile": "0123456789ab"}})[0]
    assert "threads 2, calibration profile `0123456789ab`: `qroute bench`" in line
    # Two hosts that both call their CPU 'AMD EPYC' are told apart where the file can.
    detail = "family 25 model 1 stepping 1, 512 KB cache"
    for made in ({"provenance": {"commit": "abc", "machine": "AMD EPYC", "cpu_detail": detail}},
                 {"commit": "abc", "machine": {"cpu": "AMD EPYC", "cpu_detail": detail}}):  # bench.startup's shape
        assert f"AMD EPYC ({detail})," in made_by(made)[0]
    assert "AMD EPYC, threads" in made_by({"commit": "abc", "machine": "AMD EPYC", "threads": 2})[0]
    # A section measured with other engine code says so; one of the current engine does not.
    from qroute_cli.evaluation.provenance import engine_revision

    assert "Older engine code" in "\n".join(made_by({"commit": "abc", "engine": "0123456789abcdef"}))
    assert "Older engine code" not in "\n".join(made_by({"commit": "abc", "engine": engine_revision()}))


def test_decode_speed_rows_vouch_for_one_run_only():
    """Rows appended by several commands of one commit name every command; rows from two commits,
    or any row without provenance, leave the section flagged as unvouched."""
    from bench.write_report import _one_provenance, made_by

    rows = [{"provenance": {"commit": "abc", "threads": 2, "command": "python -m bench.decode_speed --threads 2"}},
            {"provenance": {"commit": "abc", "threads": 1, "command": "python -m bench.decode_speed --threads 1"}},
            {"provenance": {"commit": "abc", "threads": 1, "command": "python -m bench.decode_speed --threads 1"}}]
    line = made_by(_one_provenance(rows))[0]
    assert line.endswith("`python -m bench.decode_speed --threads 2 ; python -m bench.decode_speed --threads 1`.")
    assert _one_provenance([rows[0], {"provenance": {**rows[1]["provenance"], "commit": "def"}}]) is None
    assert _one_provenance([rows[0], {"model": "m"}]) is None
    dirty = _one_provenance([rows[0], {"provenance": {**rows[1]["provenance"], "commit": "abc+dirty"}}])
    assert "(with uncommitted changes)" in made_by(dirty)[0]
    assert "Provenance not recorded" in made_by(_one_provenance([]))[0]


def test_latency_and_chat_sections_are_tables_from_their_results():
    from bench.write_report import chat_section, latency_section

    b = {"mape": 0.1, "mape_second_half": 0.05, "mape_given_length": 0.08, "prefill_mape": 0.3,
         "per_token_mape": 0.02, "length_mape": 0.2}
    lat = {"provenance": {"commit": "abc", "threads": 2, "command": "python -m bench.latency_error"},
           "rows": [{}] * 4, "max_tokens": 64, "calibration": "full", "by_pair": {"p": b},
           "mape": 0.1, "mape_given_length": 0.08, "overhead_ms_p50": 0.4, "overhead_share_p50": 0.0003,
           "recovery": {"wrong_factor": 0.3, "budget_s": 0.7, "hit_rate_learning": 0.75, "recovered_after_n": None,
                        "hit_rate_control": 0.0, "learning": [{}] * 4, "control": [{}] * 2}}
    text = "\n".join(latency_section(lat))
    assert "| p | 10% | 5% | 8% | 30% | 2% | 20% |" in text
    assert "75% of 4 prompts with learning (not recovered)" in text and "0% of 2 without" in text
    chat = {"settings": {"questions": ["a", "b"], "max_tokens": 16, "repeats": 2},
            "summary": [{"model": "m", "mode": "reuse", "prompt_tokens": 100, "prefilled": 12,
                         "ttft_ms_median": 200.4, "first_text_ms_median": 210, "last_turn_ttft_ms": 230}]}
    text = "\n".join(chat_section(chat))
    assert "| m | yes | 100 | 12 | 200 ms | 210 ms | 230 ms |" in text and "Provenance not recorded" in text


# -- one provenance: the cache key, seeding from results, measured capped answers ----------


def _fake_pool(fake_registry, threads: int | None):
    """A pool of fake models that reports `threads` as the count the next answer runs with."""
    from qroute_cli.generation.pool import ModelPool

    pool = ModelPool(fake_registry)
    pool.next_threads = lambda: threads
    return pool


def test_a_cell_of_another_regime_is_run_again_and_the_same_regime_reuses_it(tmp_path, fake_registry, monkeypatch):
    from qroute_cli.evaluation import provenance
    from qroute_cli.evaluation.matrix import CellStore
    from qroute_cli.evaluation.tasks import load

    item, cache = load("gsm8k")[0], tmp_path / "cache.jsonl"

    def get(threads: int | None):
        with _fake_pool(fake_registry, threads) as pool:
            store = CellStore(pool, cache)
            cell, meta = store.get(item, "fake-small")
            return cell, meta, dict(store.counts)

    first, meta, counts = get(2)
    assert counts == {"run": 1} and meta["regime"]["threads"] == 2
    again, meta_again, counts = get(2)
    assert counts == {"cache": 1} and again == first and meta_again == meta
    _, meta_one, counts = get(1)  # another thread count: another regime, run again
    assert counts == {"run": 1} and meta_one["key"] != meta["key"]
    with monkeypatch.context() as patched:
        patched.setattr(provenance, "engine_revision", lambda: "other engine code")
        _, meta_code, counts = get(2)
    assert counts == {"run": 1} and meta_code["key"] not in (meta["key"], meta_one["key"])
    with monkeypatch.context() as patched:
        patched.setattr(provenance, "llama_cpp_identity", lambda: "0.0.0+another-build")
        assert get(2)[2] == {"run": 1}
    assert get(2)[2] == {"cache": 1}
    assert len(cache.read_text().splitlines()) == 4  # every run appended, the hit not
    # Another host whose CPU has the same name but another family/model: another regime.
    with monkeypatch.context() as patched:
        from qroute_cli.routing import latency

        patched.setattr(latency, "cpu_detail", lambda: "family 25 model 17 stepping 1, 1024 KB cache")
        assert get(2)[2] == {"run": 1}


def test_each_cell_records_how_busy_the_machine_was_and_busy_cells_can_run_again(tmp_path, fake_registry,
                                                                                monkeypatch):
    """A generated cell records the cores other processes kept busy while it ran (in the cache and
    the results' meta); with rerun_busy, a cached cell that read above it runs again, once."""
    from qroute_cli.evaluation import matrix
    from qroute_cli.evaluation.tasks import load

    item, cache = load("gsm8k")[0], tmp_path / "cache.jsonl"
    others_since = matrix._others_since

    def get(load_now: float | None, rerun_busy: float | None = None):
        monkeypatch.setattr(matrix, "_others_since", lambda before: load_now)
        with _fake_pool(fake_registry, 2) as pool:
            store = matrix.CellStore(pool, cache, rerun_busy=rerun_busy)
            _, meta = store.get(item, "fake-small")
            return meta["others_cores"], dict(store.counts)

    assert get(0.8) == (0.8, {"run": 1})
    assert json.loads(cache.read_text().splitlines()[-1])["others_cores"] == 0.8
    assert get(0.0) == (0.8, {"cache": 1})  # without rerun_busy a busy cell stands
    assert get(0.02, rerun_busy=0.1) == (0.02, {"busy": 1, "run": 1})
    assert get(0.5, rerun_busy=0.1) == (0.02, {"cache": 1})  # the quiet run replaced it
    assert get(None, rerun_busy=0.0) == (None, {"busy": 1, "run": 1})
    assert get(0.9, rerun_busy=0.0) == (None, {"cache": 1})  # a cell without a reading stands
    assert others_since(matrix._cpu_reading()) is None  # too short an interval to read
    start = matrix._cpu_reading()
    if start is not None:  # the real reading, from /proc where there is one
        start = (start[0] - 2 * matrix.MIN_READ_S, *start[1:])
        assert others_since(start) >= 0.0


def test_a_drafting_cell_drafts_by_the_profile_curve_as_a_forced_run_does(tmp_path, fake_registry, monkeypatch):
    """With a profile, a drafting pair's cell runs with the pair's cost curve (and its key names
    the curve, so a recalibration runs it again); a plain pair's key is what it was without one.
    Each cell starts with the pair's speed memory empty, as a one-shot `qroute run` does."""
    from conftest import fake_profile

    from qroute_cli.evaluation import matrix
    from qroute_cli.evaluation.tasks import load
    from qroute_cli.generation import runner
    from qroute_cli.routing.latency import cost_curve

    item = load("gsm8k")[0]
    seen = []
    real_run = runner.run_prompt

    def spy(pool, pair, messages, config, on_text=None, **kw):
        seen.append((pair.name, kw.get("costs"), pair.name in pool.speed))
        return real_run(pool, pair, messages, config, on_text, **kw)

    monkeypatch.setattr(runner, "run_prompt", spy)

    def keys(profile, cache):
        with _fake_pool(fake_registry, 2) as pool:
            pool.speed_memory("fake-big+ngram").plain_n = 99  # left over from an earlier cell
            store = matrix.CellStore(pool, tmp_path / cache, profile=profile)
            return {p: store.get(item, p)[1]["key"] for p in ("fake-big", "fake-big+ngram")}

    profile = fake_profile(fake_registry)
    without, with_curve = keys(None, "a.jsonl"), keys(profile, "b.jsonl")
    assert with_curve["fake-big"] == without["fake-big"]
    assert with_curve["fake-big+ngram"] != without["fake-big+ngram"]
    assert keys(fake_profile(fake_registry, slow=2.0), "b.jsonl")["fake-big+ngram"] != with_curve["fake-big+ngram"]
    curve = cost_curve(profile, fake_registry.pair("fake-big+ngram"))
    assert ("fake-big+ngram", curve, False) in seen and ("fake-big+ngram", None, False) in seen
    assert all(costs is None for name, costs, _ in seen if name == "fake-big")


def test_every_cell_reads_its_prompt_afresh(tmp_path, fake_registry, monkeypatch):
    """The pairs take each prompt in turn with their models kept loaded: a verifier must not
    find the prompt already in its KV cache from the pair before (its prefill would be free)."""
    from qroute_cli.evaluation import matrix
    from qroute_cli.evaluation.tasks import load
    from qroute_cli.generation import runner

    item = load("gsm8k")[0]
    cached, real_run = [], runner.run_prompt

    def spy(pool, pair, messages, config, on_text=None, **kw):
        before = len(pool.get(pair.verifier).tokens)
        gen = real_run(pool, pair, messages, config, on_text, **kw)
        cached.append((pair.name, before, gen.stats.prompt_cached))
        return gen

    monkeypatch.setattr(runner, "run_prompt", spy)
    with _fake_pool(fake_registry, 2) as pool:
        store = matrix.CellStore(pool, tmp_path / "cache.jsonl")
        for name in ("fake-big", "fake-big+ngram", "fake-big+small", "fake-big"):
            store.get(item, name)
    # The last get is a cache hit: three runs, each starting from an empty KV cache.
    assert cached == [("fake-big", 0, 0), ("fake-big+ngram", 0, 0), ("fake-big+small", 0, 0)]


def test_the_engine_revision_is_the_engine_source_only(tmp_path):
    """A hash of the generation code, speculation.py and tuning.py: it names their content, so
    an unrelated commit keeps the cells and an engine edit (committed or not) does not."""
    from qroute_cli.evaluation import provenance

    rev = provenance.engine_revision()
    assert rev == provenance.engine_revision.__wrapped__() and len(rev) == 16
    assert provenance.ENGINE_SOURCES == ("generation", "speculation.py", "tuning.py")
    assert provenance.llama_cpp_identity().startswith(provenance.llama_cpp_identity().split("+")[0])


def _fake_bench(home: Path, out: Path | None, seed_dir: Path | None, budgets=(), monkeypatch=None):
    """The bench on two fake pairs, one prompt per task, in-process: its result (and, with
    `out`, its results files written there)."""
    import io
    from dataclasses import replace

    from rich.console import Console

    from qroute_cli.config import load_registry
    from qroute_cli.evaluation.bench import BenchConfig, run_bench
    from qroute_cli.evaluation.report import write_outputs
    from qroute_cli.generation.pool import ModelPool

    pairs = ("fake-big", "fake-small")
    reg = load_registry(FAKE_CONFIG, include_user=False)
    reg = replace(reg, pairs={p: reg.pairs[p] for p in pairs})
    cfg = BenchConfig(limit=1, pairs=pairs, live=False, bootstrap=0, seed_dir=seed_dir, budgets=tuple(budgets))
    with ModelPool(reg) as pool, strategies.fresh_router(reg, strategy="quality", pool=pool, seed=0,
                                                          console=Console(file=io.StringIO())) as router:
        res = run_bench(pool, cfg, home / "matrix.jsonl", router=router, scorers={})
    if out is not None:
        write_outputs(res, out)
    return res


def _where_from(res) -> dict:
    """Where the matrix's cells came from (without the load readings, which are the machine's)."""
    return {k: v for k, v in res.summary["matrix_cells"]["cells"].items() if k != "others_cores"}


def _figures(res) -> dict:
    return {k: v for k, v in res.summary.items() if k not in ("bench_seconds", "matrix_cells")}


def test_a_bench_extends_earlier_results_of_its_regime_and_reruns_unkeyed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_HOME", str(tmp_path / "home"))
    first = _fake_bench(tmp_path / "a", tmp_path / "results", None)
    n = len(first.items) * 2
    assert _where_from(first) == {"reused_from_cache": 0, "reused_from_results": 0, "run": n,
                                  "rerun_other_regime": 0, "rerun_busy": 0}
    rows = json.loads((tmp_path / "results" / "matrix.json").read_text())
    assert len(rows) == n and all(r["key"] and r["regime"]["engine"] for r in rows)
    # The files beside summary.json are named in it by content: its provenance is theirs.
    import hashlib

    files = json.loads((tmp_path / "results" / "summary.json").read_text())["files"]
    assert {"matrix.json", "capped.json", "strategies.json", "strategies.csv"} <= set(files)
    assert all(hashlib.sha256((tmp_path / "results" / name).read_bytes()).hexdigest() == digest
               for name, digest in files.items())
    # A fresh cache seeded from those results: nothing runs, and the figures are the same.
    seeded = _fake_bench(tmp_path / "b", None, tmp_path / "results")
    assert _where_from(seeded) == {"reused_from_cache": 0, "reused_from_results": n, "run": 0,
                                   "rerun_other_regime": 0, "rerun_busy": 0}
    assert _figures(seeded) == _figures(first)
    # Results written before cells carried a key (the committed matrix): another regime, run again.
    old = tmp_path / "old"
    old.mkdir()
    (old / "matrix.json").write_text(json.dumps([{k: v for k, v in r.items() if k not in ("key", "regime")}
                                                 for r in rows]))
    rerun = _fake_bench(tmp_path / "c", None, old)
    assert _where_from(rerun) == {"reused_from_cache": 0, "reused_from_results": 0, "run": n,
                                  "rerun_other_regime": n, "rerun_busy": 0}


def test_a_capped_route_runs_the_answer_with_the_cap(tmp_path, fake_registry, monkeypatch):
    """A budget no pair fits (0.1 s: room for a short fake answer only) makes the router cap max_tokens: the bench generates that capped
    answer through the real pipeline (cached as a cell of its own) instead of cutting the
    uncapped one; a replay without it says the point is simulated."""
    from qroute_cli.evaluation.matrix import Matrix, run_matrix
    from qroute_cli.evaluation.tasks import load
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.generation.runner import run_prompt, user_messages
    from qroute_cli.types import GenerationConfig

    monkeypatch.setenv("QROUTE_HOME", str(tmp_path / "home"))
    items = [load(task)[0] for task in ("gsm8k", "wp")]
    pairs = ["fake-big", "fake-small"]
    cache = tmp_path / "cache.jsonl"
    with ModelPool(fake_registry) as pool, _fake_bench_router(fake_registry, pairs) as router:
        m = run_matrix(pool, items, pairs, cache)
        tight = strategies.routed(m, items, router, "quality", 0.1)
        offline = Matrix(m.items, m.pairs, dict(m.cells))  # as a replay of a matrix without capped runs
        replayed = strategies.routed(offline, items, router, "quality", 0.1)
        assert m.capped and not any(tight.extra["simulated"])
        for (item_id, pair, cap), cell in m.capped.items():
            item = next(it for it in items if it.id == item_id)
            assert cap < TASKS[item.task].max_tokens and cell.tokens <= cap
            # The same answer as a run with that cap, not a cut of the uncapped one.
            direct = run_prompt(pool, fake_registry.pair(pair), user_messages(item.prompt),
                                GenerationConfig(max_tokens=cap, temperature=0.0))
            assert cell.text == direct.text and cell.tokens == direct.stats.output_tokens
            assert m.meta[(item_id, pair, cap)]["key"]
        assert m.store.counts["capped run"] == len(m.capped)
        logged = [json.loads(line) for line in cache.read_text().splitlines()]
        assert sorted((r["item"], r["pair"], r["max_tokens"]) for r in logged if r["max_tokens"] in
                      {cap for _, _, cap in m.capped}) == sorted(m.capped)
    assert all(replayed.extra["simulated"])
    counts = strategies.simulated_counts([tight, replayed])
    assert counts == {"answers": len(items), "answers_routed": 2 * len(items), "points": 1, "points_routed": 2}
    # An answer that stopped well below the cap is its own capped run: nothing to generate.
    full = m.cell(items[0], "fake-small")
    assert m.capped_cell(items[0], "fake-small", full.tokens + 64) is full
    assert offline.capped_cell(items[0], "fake-big", 20) is None  # offline: not measured, not run


def test_capped_answers_go_to_the_results_and_seed_a_later_bench(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_HOME", str(tmp_path / "home"))
    first = _fake_bench(tmp_path / "a", tmp_path / "results", None, budgets=(0.1, 1000.0))
    assert first.summary["matrix_cells"]["capped_cells"]["run"] > 0
    assert first.summary["simulated"]["answers"] == 0
    capped = json.loads((tmp_path / "results" / "capped.json").read_text())
    assert len(capped) == len(first.matrix.capped) and all(r["key"] and r["max_tokens"] for r in capped)
    seeded = _fake_bench(tmp_path / "b", None, tmp_path / "results", budgets=(0.1, 1000.0))
    assert seeded.summary["matrix_cells"]["capped_cells"]["run"] == 0
    assert seeded.summary["matrix_cells"]["capped_cells"]["reused_from_results"] == len(capped)
    assert _figures(seeded) == _figures(first)


def test_routing_overhead_script_runs_on_a_few_prompts(tmp_path):
    """bench.overhead times decide() with the shipped ONNX predictor on the committed matrix's
    prompts and writes p50/p95, the share of end-to-end latency and what made the file."""
    out = tmp_path / "overhead.json"
    r = subprocess.run([sys.executable, "-m", "bench.overhead", "--limit", "1", "--repeats", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    tasks = {row["task"] for row in json.loads((Path(__file__).resolve().parents[1] / "bench" / "results"
                                                / "matrix.json").read_text())}
    assert data["all"]["n_prompts"] == len(tasks) == len(data["rows"]) and set(data["by_task"]) == tasks
    assert data["scorer"]["file"].endswith("predictor.onnx") and data["scorer"]["name"] != "prior"
    for fig in ("decide_ms", "predictor_ms", "share_of_end_to_end"):
        assert 0 < data["all"][fig]["p50"] <= data["all"][fig]["p95"]
    assert all(0 < row["share"] < 1 and row["chosen"] in data["pairs"] for row in data["rows"])
    assert {"commit", "date", "machine", "command", "engine", "llama_cpp_build"} <= set(data["provenance"])
    assert data["load_read"]["no_recent_reading_ms"] > data["load_read"]["recent_reading_ms"]


def test_the_report_draws_the_static_frontier_and_derives_its_sentences(tmp_path):
    """The Pareto plots draw the static pairs' frontier as a step line; the report's sentences
    about targets, threads and builds are computed from the results, and the routing-overhead
    section says when the machine was busy."""
    from bench import write_report
    from qroute_cli.evaluation.report import frontier_line, pareto_plot

    xs, ys = frontier_line([(1.0, 0.2), (3.0, 0.4), (2.0, 0.5), (4.0, 0.9)], 6.0)
    assert (xs, ys) == ([1.0, 2.0, 4.0, 6.0], [0.2, 0.5, 0.9, 0.9])  # (3.0, 0.4) is dominated
    rows = [{"task": "all", "strategy": s, "setting": f"{s}{i}", "mean_latency_s": 1.0 + i, "mean_quality": q}
            for i, (s, q) in enumerate([("static", 0.2), ("static", 0.5), ("quality", 0.4), ("quality", 0.6)])]
    assert pareto_plot(rows, "t", tmp_path / "p.png").stat().st_size > 1000

    no_frontier = write_report.targets_sentence({"hypervolume_ratio_vs_best_static": 1.6,
                                                 "quality_gain_vs_cost_at_matched_latency": 0.2, "apgr": 0.5})
    assert "single best static pair" in no_frontier and "1.60x" in no_frontier and ">= 1.25x: met" not in no_frontier
    assert "target >= 1.25x: missed" in write_report.targets_sentence({"hypervolume_ratio_vs_static_frontier": 1.1})

    def with_interval(low, high):
        return {"hypervolume_ratio_vs_static_frontier": 1.3, "quality_gain_vs_cost_at_matched_latency": 0.2,
                "cost_point": [1.5, 0.1], "quality_at_cost_latency": 0.12,
                "intervals": {"all": {"headline": {
                    "hypervolume_ratio_vs_static_frontier": {"estimate": 1.3, "low": low, "high": high},
                    "quality_gain_vs_cost_at_matched_latency_abs": {"estimate": 0.02, "low": 0.01, "high": 0.03}}}}}

    shown = write_report.targets_sentence(with_interval(1.26, 1.4))
    assert "1.30x [1.26, 1.40]" in shown and "target >= 1.25x: met by the whole 95% interval" in shown
    assert "0.120 against 0.100 at 1.50 s: +0.020 [+0.010, +0.030] absolute" in shown
    assert "met by the point estimate only" in write_report.targets_sentence(with_interval(1.1, 1.4))
    speed = [{"model": "m", "threads": t, "hog": h, "omp_wait_policy": "", "gen_tps": v}
             for t, h, v in [(2, False, 60.0), (2, True, 3.0), (1, True, 42.0)]]
    assert write_report.busy_core_sentences(speed)[0].startswith("m, one core busy: 3.0 tokens/s with 2 threads, 42.0 with 1 (14.0x)")
    assert "at most 10% (m)" in write_report.build_sentence([{"model": "m", "gen_tps": 10.0}, {"model": "m", "gen_tps": 11.0}])
    fig = {"p50": 1.0, "p95": 2.0, "mean": 1.2, "max": 3.0}
    share = {"p50": 0.001, "p95": 0.002, "mean": 0.001, "max": 0.003, "overall": 0.001}
    scope = {"n_prompts": 3, "decide_ms": fig, "predictor_ms": fig, "latency_model_and_policy_ms": fig,
             "share_of_end_to_end": share, "share_if_fastest_pair": share, "simulated_answers": 0}
    data = {"all": scope, "by_task": {"nq": scope}, "budget_s": 2.0, "repeats": 5, "pairs": ["a", "b"],
            "scorer": {"file": "predictor.onnx", "name": "hashed-ridge"},
            "load_read": {"recent_reading_ms": 0.2, "no_recent_reading_ms": 50.0},
            "provenance": {"commit": "abc", "date": "d", "machine": "cpu", "threads": None, "command": "c", "cores": 2,
                           "load_average_before": [3.0, 1.0, 1.0], "load_average_after": [0.1, 0.1, 0.1],
                           "matrix": {"file": "matrix.json"}, "profile": {"file": "profile.json"}}}
    text = "\n".join(write_report.overhead_section(data))
    assert "| all | 3 | 1.00 ms | 2.00 ms |" in text and "| nq | 3 |" in text and "rough figures" in text
    data["provenance"]["load_average_before"] = [0.2, 0.2, 0.2]
    assert "rough figures" not in "\n".join(write_report.overhead_section(data))


def test_report_sections_for_speculation_startup_and_serving_are_derived_from_their_files():
    """Each section states its provenance and computes its verdicts from the numbers."""
    from bench import write_report as wr

    prov = {"commit": "abc123", "date": "2026-11-30", "machine": "cpu", "threads": 2, "command": "python -m bench.x"}
    engine = {"provenance": prov, "meta": {"verifier": "v", "drafter": "d", "max_tokens": 8, "repeats": 3,
                                           "llama_cpp_python": "0.3.36"},
              "rows": [{"prompt": "p", "mode": "qroute plain", "tokens_per_s": 10.0, "ratio_vs_qroute_plain": 1.0,
                        "limit_vs_plain": None, "share_of_limit": None, "acceptance": None, "agreement_with_plain": 1.0},
                       {"prompt": "p", "mode": "qroute ngram", "tokens_per_s": 9.0, "ratio_vs_qroute_plain": 0.9,
                        "limit_vs_plain": 1.2, "best_draft_len": 2, "share_of_limit": 0.75, "acceptance": 0.5,
                        "token_acceptance": 0.7, "agreement_with_plain": 1.0}]}
    text = "\n".join(wr.engine_section(engine))
    assert "abc123" in text and "0 of 1 speculative rows reach 90%" in text and "1 run below 0.95x" in text
    assert "own noise" not in text
    engine["rows"].append({**engine["rows"][0], "mode": "qroute plain again", "ratio_vs_qroute_plain": 0.97})
    text = "\n".join(wr.engine_section(engine))
    assert "0 of 1 speculative rows" in text and "second time each repeat (the measurement's own noise): p 0.97x." in text
    cli = {"provenance": prov, "max_tokens": 8, "rounds": 3, "rows": [
        {"prompt": "p", "pair": "v", "decode_tokens_per_s": 10.0, "x_plain_decode": 1.0, "x_plain_decode_range": [1, 1],
         "x_plain_latency": 1.0, "acceptance": None, "same_text_as_plain": 1.0},
        {"prompt": "p", "pair": "v+ngram", "decode_tokens_per_s": 11.0, "x_plain_decode": 1.1,
         "x_plain_decode_range": [1.0, 1.2], "x_plain_latency": 1.05, "acceptance": 0.6, "same_text_as_plain": 1.0}]}
    assert "1 of 1 speculative rows decode at 0.95x plain or better." in "\n".join(wr.cli_speed_section(cli))
    startup = {**prov, "runs": 5, "median_s": {"qroute_run": 1.3, "bare_llama_cpp": 1.0, "qroute_help": 0.3},
               "ratio_over_bare": {"qroute_run": {"median_ratio": 1.3, "bootstrap_95": [1.25, 1.4]}}}
    assert "not met." in "\n".join(wr.startup_section(startup))
    assert "earlier code" not in "\n".join(wr.startup_section(startup))
    assert "calibration profile" not in "\n".join(wr.startup_section(startup))
    startup["median_s"]["qroute_run_calibrated"] = 1.1
    startup["ratio_over_bare"]["qroute_run_calibrated"] = {"median_ratio": 1.1, "bootstrap_95": [1.05, 1.15]}
    assert "first routed run: 1.10 s, ratio 1.10 (95% interval 1.05–1.15); at most 1.2x: met." \
        in "\n".join(wr.startup_section(startup))
    assert "learning store" not in "\n".join(wr.startup_section(startup))
    startup.update(history_runs=2000)
    startup["median_s"]["qroute_run_history"] = 1.3
    startup["ratio_over_bare"]["qroute_run_history"] = {"median_ratio": 1.3, "bootstrap_95": [1.1, 1.4]}
    assert "With 2000 runs in the learning store as well (a run folds in only the runs logged since the estimates " \
           "kept beside the store, runs.learned.json): 1.30 s, ratio 1.30 (95% interval 1.10–1.40); at most 1.2x: " \
           "not shown either way" in "\n".join(wr.startup_section(startup))
    startup["median_s"].update(baseline_run=1.6, baseline_help=0.31)
    startup["ratio_over_bare"]["baseline_run"] = {"median_ratio": 1.6, "bootstrap_95": [1.5, 1.7]}
    startup["baseline_label"] = "commit abc1234"
    assert ("the earlier code (commit abc1234) took 1.60 s (ratio 1.60, 95% interval 1.50–1.70) and 0.31 s for "
            "`--help`.") in "\n".join(wr.startup_section(startup))
    load = {"provenance": prov, "setup": {"clients": 4, "requests": 10, "max_tokens": 8, "budget_s": 30, "servers": "x",
                                          "model": "m", "server_threads": 1, "kill_after": 1 / 3},
            "requests": 10, "answered": 9, "clear_errors": 1, "unclear_errors": 0, "throughput_answers_per_s": 1.0,
            "latency_p50_s": 1.0, "latency_p95_s": 2.0, "budget_hit_rate": 0.9, "answers_with_failover": 1,
            "every_request_answered_or_clear_error": True, "answers_after_the_kill_per_pair": {"b": 6}}
    text = "\n".join(wr.load_test_section(load))
    assert "answer or a clear error: yes." in text and "b: 6" in text


def test_results_and_reports_do_not_make_the_code_read_as_uncommitted(tmp_path):
    """A bench that rewrites results and reports leaves the commit clean; a code edit does not."""
    import subprocess

    from qroute_cli.evaluation.provenance import NOT_CODE, git_state

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    files = ["qroute_cli/x.py", *(f"{p}/r.json" if not p.endswith(".md") else p for p in NOT_CODE)]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("a\n")
    git("add", ".")
    git("-c", "user.name=q", "-c", "user.email=q@q", "commit", "-qm", "c")
    for f in files[1:]:
        (tmp_path / f).write_text("b\n")
    head, dirty = git_state(tmp_path)
    assert len(head) == 40 and not dirty
    (tmp_path / files[0]).write_text("b\n")
    assert git_state(tmp_path)[1]


def test_cells_run_prompt_by_prompt_with_the_pairs_taking_turns_first(tmp_path, fake_registry, monkeypatch):
    """Every pair runs on a prompt before the next prompt, and the pair that goes first rotates,
    so drift in the machine's speed reaches every pair alike."""
    from qroute_cli.evaluation import matrix as matrix_mod
    from qroute_cli.evaluation.tasks import load

    items = load("gsm8k")[:3]
    pairs = ["fake-big", "fake-small"]
    order = [(it.id, p) for it, p in matrix_mod.cell_order(items, pairs)]
    assert order == [(items[0].id, "fake-big"), (items[0].id, "fake-small"),
                     (items[1].id, "fake-small"), (items[1].id, "fake-big"),
                     (items[2].id, "fake-big"), (items[2].id, "fake-small")]
    ran = []
    real_get = matrix_mod.CellStore.get

    def get(self, item, pair, max_tokens=None):
        ran.append((item.id, pair))
        return real_get(self, item, pair, max_tokens)

    monkeypatch.setattr(matrix_mod.CellStore, "get", get)
    with _fake_pool(fake_registry, 2) as pool:
        m = matrix_mod.run_matrix(pool, items, pairs, tmp_path / "cache.jsonl")
    assert ran == order and len(m.cells) == 6


class _BusyMachine:
    """Clock and CPU tick counters of a machine whose other processes keep `loads[i]` cores busy
    during the i-th sleep (then none): what `threads.CpuLoad` reads."""

    def __init__(self, loads: list[float], slept: list[float]) -> None:
        from qroute_cli.generation.threads import _TICK

        self.loads, self.slept, self.tick = list(loads), slept, _TICK
        self.now, self.busy = 0.0, 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        load = self.loads.pop(0) if self.loads else 0.0
        self.slept.append(seconds)
        self.now += seconds
        self.busy += load * self.tick * seconds

    def read(self) -> tuple[int, int]:
        return round(self.busy), 0


def test_a_cell_waits_for_a_quiet_machine_and_then_runs(tmp_path, fake_registry):
    """With --wait-quiet, a cell is held back while other processes keep more cores busy than
    allowed, runs once a sample reads quiet, and runs anyway after the longest wait."""
    from qroute_cli.evaluation import matrix as matrix_mod
    from qroute_cli.evaluation.tasks import load

    slept, told = [], []
    machine = _BusyMachine([1.5, 0.9, 0.05], slept)
    quiet = matrix_mod.QuietWait(0.1, sample_s=2.0, sleep=machine.sleep, clock=machine.clock, read=machine.read,
                                 on_wait=lambda load, s: told.append((load, s)))
    with _fake_pool(fake_registry, 2) as pool:
        store = matrix_mod.CellStore(pool, tmp_path / "cache.jsonl", quiet=quiet)
        item = load("gsm8k")[0]
        store.get(item, "fake-small")
        assert slept == [2.0, 2.0, 2.0] and told == [(1.5, 2.0), (0.9, 4.0)] and quiet.waited_s == 4.0
        store.get(item, "fake-small")  # cached: no wait
        assert len(slept) == 3 and store.counts == {"run": 1, "cache": 1}

    busy = _BusyMachine([3.0] * 10, [])  # never quiet
    patient = matrix_mod.QuietWait(0.1, most_s=5.0, sample_s=2.0, sleep=busy.sleep, clock=busy.clock, read=busy.read)
    patient.wait()
    assert patient.waited_s == 6.0  # gave up after its longest wait: the cell runs


def test_the_engine_limit_reads_a_drafter_that_never_drafted_by_teacher_forcing():
    """A model-draft mode whose runs never drafted still gets a limit: at the drafter's
    teacher-forced acceptance on the plain answer; observed acceptance wins where there is any."""
    from bench.engine import limit_inputs

    never = [{"checked": 0, "accepted": 0}, {"checked": 0, "accepted": 0}]
    assert limit_inputs("qroute model-draft", never, [1, 2], [3, 4], 0.62) == (0.62, 1.0, "teacher-forced on the plain answer")
    assert limit_inputs("qroute model-draft", never, [1, 2], [3, 4], None) == (None, 1.0, None)
    # llama-cpp-python's prompt-lookup "draft_model" is no model drafter: no teacher-forced limit.
    assert limit_inputs("llama-cpp-python draft_model (prompt lookup)", never, [1, 2], [3, 4], 0.62) == (None, 1.0, None)
    drafted = [{"checked": 10, "accepted": 7}, {"checked": 10, "accepted": 5}]
    assert limit_inputs("qroute model-draft", drafted, [1, 2], [3, 4], 0.9) == (0.6, 1.0, "observed")
    per_token, coverage, source = limit_inputs("qroute ngram", never, [1, 2, 3, 1, 2], [3, 1, 2, 3], 0.9)
    assert source.startswith("n-gram") and 0.0 <= coverage <= 1.0


def test_native_rows_keep_the_run_of_median_speed():
    from bench.native import median_run

    runs = [{"tokens": [0] * 10, "seconds": s} for s in (1.0, 2.0, 0.5)]
    assert median_run(runs)["seconds"] == 1.0
    assert median_run(runs[:2])["seconds"] == 2.0  # an even count: the lower middle
    assert median_run(runs[:1]) is runs[0]


def test_the_gpu_section_is_written_from_the_committed_gpu_run():
    """bench/results/gpu: the run's machine and build, both cost curves, every engine row, and
    the forced pairs' verdict come out of the files, not out of prose."""
    from bench import write_report

    load = lambda name: write_report._load(f"gpu/{name}")  # noqa: E731
    run = load("run.json")
    profiles = {"GPU": load("profile_gpu.json"), "CPU": load("profile_host_cpu.json")}
    engines = {"GPU": load("engine_gpu.json"), "CPU": load("engine_host_cpu.json")}
    text = "\n".join(write_report.gpu_section(run, profiles, engines, load("cli_speed_gpu.json"), "## GPU"))
    assert run["commit"][:12] in text and "90-real" in text
    decode = profiles["GPU"]["models"]["smollm2-135m"]["decode_s"]
    assert f"| GPU | {decode * 1e3:.2f} |" in text
    assert text.count("| GPU | ") + text.count("| CPU | ") == 2 + len(engines["GPU"]["rows"]) + len(engines["CPU"]["rows"])
    assert "speculative rows decode at 0.95x plain or better" in text
