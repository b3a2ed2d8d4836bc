"""Routing from the command line (subprocess, fake models): --explain, --json route, budgets,
strategies, `qroute calibrate`, `qroute stats`, and bad input."""

from __future__ import annotations

import json

import pytest

from conftest import fake_profile, qroute
from qroute_cli import paths
from qroute_cli.routing import latency
from qroute_cli.routing.latency import Machine, save_profile


@pytest.fixture(autouse=True)
def only_fakes(tmp_path, monkeypatch):
    """Hide the real model files so routing weighs the fake pairs only."""
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


def run_json(*args) -> dict:
    r = qroute("run", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_first_run_calibrates_then_explains():
    r = qroute("run", "hello there", "--explain", "--budget", "5s", "-n", "20")
    assert r.returncode == 0, r.stderr
    assert "measuring now" in r.stderr  # missing profile: measured, with a notice
    assert "fake-big+small" in r.stderr and "fits" in r.stderr  # the candidate table
    assert "highest predicted quality" in r.stderr
    assert latency.profile_path().exists()
    r = qroute("run", "hello again", "-n", "5")
    assert "measuring now" not in r.stderr


def test_json_route_shape_and_strategies(fake_registry):
    save_profile(fake_profile(fake_registry))
    obj = run_json("hi", "--budget", "800ms", "-n", "10")
    route = obj["route"]
    assert set(route) >= {"strategy", "budget_s", "chosen", "reason", "candidates"}
    assert route["budget_s"] == 0.8 and route["strategy"] == "quality"
    fake_pairs = {p for p in fake_registry.pairs if p.startswith("fake")}
    assert {c["pair"] for c in route["candidates"]} == fake_pairs
    assert set(route["candidates"][0]) == {"pair", "predicted_quality", "predicted_latency_s", "fits"}
    assert obj["pair"] == route["chosen"]
    fitting = [c for c in route["candidates"] if c["fits"]]
    assert route["chosen"] == max(fitting, key=lambda c: (c["predicted_quality"], -c["predicted_latency_s"]))["pair"]

    route = run_json("hi", "--strategy", "cost", "-n", "5")["route"]
    assert route["chosen"] == min(route["candidates"], key=lambda c: c["predicted_latency_s"])["pair"]
    assert run_json("hi", "--strategy", "static:fake-small", "-n", "5")["pair"] == "fake-small"
    assert run_json("hi", "--strategy", "random", "--seed", "1", "-n", "5")["route"]["strategy"] == "random"


def test_budget_caps_tokens_when_nothing_fits(fake_registry):
    save_profile(fake_profile(fake_registry))  # fake-big: 10 ms/token, fake-other: 3 ms/token
    obj = run_json("tell me something", "--budget", "300ms", "-n", "200")
    route = obj["route"]
    assert not any(c["fits"] for c in route["candidates"])
    assert route["max_tokens"] is not None and route["max_tokens"] < 200
    assert "capped" in route["reason"]
    assert obj["tokens"] <= route["max_tokens"]
    # The fake is far faster than this profile says, and the run taught the router so:
    # forget that run to see the warning the profile alone gives.
    assert qroute("stats", "--reset", "--yes").returncode == 0
    r = qroute("run", "tell me something", "--budget", "300ms", "-n", "200")
    assert "Warning" in r.stderr and "capped" in r.stderr


@pytest.mark.parametrize("budget", ["0", "-1s", "0ms", "abc", "5 parsecs", "nan"])
def test_bad_budget_is_a_usage_error(budget):
    r = qroute("run", "hi", f"--budget={budget}")
    assert r.returncode == 2, r.stderr
    assert "budget" in r.stderr.lower() and "Traceback" not in r.stderr


def test_unknown_strategy_and_pair():
    r = qroute("run", "hi", "--strategy", "qualty")
    assert r.returncode == 2 and "Did you mean 'quality'" in r.stderr
    r = qroute("run", "hi", "--strategy", "static:fake-bgi")
    assert r.returncode == 2 and "fake-big" in r.stderr
    assert "Traceback" not in r.stderr


def test_stats_and_reset(fake_registry):
    save_profile(fake_profile(fake_registry))
    for prompt in ("one", "two", "three"):
        assert qroute("run", prompt, "-n", "5", "--budget", "5s").returncode == 0
    data = json.loads(qroute("stats", "--json").stdout)
    assert data["total"]["runs"] == 3
    assert sum(p["runs"] for p in data["pairs"].values()) == 3
    assert data["total"]["budget_hit_rate"] is not None and data["total"]["overhead_ms_p50"] > 0
    table = qroute("stats")
    assert table.returncode == 0 and "hits" in table.stdout and "lat err" in table.stdout
    r = qroute("stats", "--reset", input="n\n")
    assert r.returncode == 1
    assert json.loads(qroute("stats", "--json").stdout)["total"]["runs"] == 3
    assert qroute("stats", "--reset", "--yes").returncode == 0
    assert json.loads(qroute("stats", "--json").stdout)["total"]["runs"] == 0


def test_corrupted_store_is_moved_aside_and_run_goes_on(fake_registry):
    save_profile(fake_profile(fake_registry))
    db = paths.data_dir() / "runs.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_bytes(b"garbage" * 1000)
    r = qroute("run", "hi", "-n", "5")
    assert r.returncode == 0, r.stderr
    assert "moved to" in " ".join(r.stderr.split())
    assert list(db.parent.glob("runs.db.corrupt-*"))
    assert json.loads(qroute("stats", "--json").stdout)["total"]["runs"] == 1


def test_calibrate_show_and_quick(fake_registry):
    r = qroute("calibrate", "--show")
    assert r.returncode == 1 and "No calibration profile" in r.stderr
    r = qroute("calibrate", "--quick", "-m", "fake-big", "-m", "fake-small")
    assert r.returncode == 0, r.stderr
    shown = json.loads(qroute("calibrate", "--show", "--json").stdout)
    assert set(shown["models"]) == {"fake-big", "fake-small"}
    assert shown["machine"]["threads"] >= 1 and shown["machine"]["cpu"]
    assert qroute("calibrate", "--show").returncode == 0
    r = qroute("calibrate", "-m", "fake-bigg")
    assert r.returncode == 2 and "fake-big" in r.stderr


def test_calibrating_this_setup_keeps_the_profile_of_another(fake_registry):
    prof = fake_profile(fake_registry)
    prof.machine = Machine("Another CPU", 96, "9.9.9")
    other = save_profile(prof)
    before = other.read_bytes()
    r = qroute("calibrate", "--quick", "-m", "fake-big")
    assert r.returncode == 0, r.stderr
    assert other.read_bytes() == before
    assert json.loads(latency.profile_path().read_text())["machine"]["cpu"] != "Another CPU"
