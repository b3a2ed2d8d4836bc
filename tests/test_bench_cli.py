"""`qroute bench` options on the fake backend: which earlier results seed the cache
(--seed-from), the progress of the capped answers the routes need, and the calibration
profile named in the results' provenance."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import FAKE_CONFIG

SMALL = ("--limit", "1", "--tasks", "nq,gsm8k", "--pairs", "fake-big,fake-small", "--no-live", "--bootstrap", "0")


def _bench(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "bench", *SMALL, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=os.environ.copy())


def _cells(summary: dict, kind: str = "cells") -> dict:
    """Where the cells came from (the load readings left out: they are the machine's, and fake
    cells are too short to read)."""
    return {k: v for k, v in summary["matrix_cells"][kind].items() if k not in ("others_cores", "rerun_busy")}


def test_seed_from_a_missing_or_empty_directory_is_a_usage_error(tmp_path, qroute_home):
    for target, says in ((tmp_path / "nowhere", "no such directory"), (tmp_path, "has no matrix.json")):
        r = _bench("--seed-from", str(target), "--cache", str(tmp_path / "cache.jsonl"))
        assert r.returncode == 2, r.stderr
        assert says in r.stderr and "--seed-from none" in r.stderr  # the hint
        assert "Traceback" not in r.stderr and r.stdout == ""
        assert not (tmp_path / "cache.jsonl").exists()  # refused before any cell ran


def test_seed_from_names_the_results_that_seed_the_cache(tmp_path):
    results = tmp_path / "results"
    first = _bench("--json", "--out", str(results), "--cache", str(tmp_path / "a.jsonl"))
    assert first.returncode == 0, first.stderr
    ran = json.loads(first.stdout)
    n = _cells(ran)["run"]
    assert n == 4 and _cells(ran)["reused_from_results"] == 0
    capped = _cells(ran, "capped_cells")["run"]
    # A fresh cache seeded from those results runs nothing, capped answers included.
    seeded = _bench("--json", "--cache", str(tmp_path / "b.jsonl"), "--seed-from", str(results),
                    "--out", str(tmp_path / "again"))
    assert seeded.returncode == 0, seeded.stderr
    summary = json.loads(seeded.stdout)
    assert _cells(summary) == {"reused_from_cache": 0, "reused_from_results": n, "run": 0, "rerun_other_regime": 0}
    assert _cells(summary, "capped_cells")["reused_from_results"] == capped
    assert _cells(summary, "capped_cells")["run"] == 0
    config = json.loads((tmp_path / "again" / "summary.json").read_text())["config"]
    assert config["seed_dir"] == str(results)
    # 'none': the same results are there, but only the (fresh) cache is read.
    alone = _bench("--json", "--cache", str(tmp_path / "c.jsonl"), "--seed-from", "none")
    assert alone.returncode == 0, alone.stderr
    assert _cells(json.loads(alone.stdout)) == {"reused_from_cache": 0, "reused_from_results": 0, "run": n,
                                                "rerun_other_regime": 0}


def test_capped_answers_show_progress_on_stderr_and_json_stays_clean(tmp_path, qroute_home):
    r = _bench("--json", "--cache", str(tmp_path / "cache.jsonl"), "--out", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)  # stdout is the summary and nothing else
    capped = _cells(summary, "capped_cells")
    fetched = capped["reused_from_cache"] + capped["reused_from_results"] + capped["run"]
    assert fetched > 0  # the default sweep starts below any full answer: the routes cap some
    # Not a terminal: the bar's final state is printed once, on stderr, counting every one.
    assert "capped: " in r.stderr and f"{fetched}/?" in r.stderr
    assert "capped: " not in r.stdout
    # The provenance names the calibration profile the routes were made with: its file's hash.
    made_by = json.loads((tmp_path / "out" / "summary.json").read_text())["provenance"]
    assert {"commit", "date", "machine", "threads", "command", "calibration_profile"} <= set(made_by)
    assert made_by == summary["provenance"]
    profiles = list((qroute_home / "data" / "profiles").glob("*.json"))
    assert len(profiles) == 1
    assert made_by["calibration_profile"] == hashlib.sha256(profiles[0].read_bytes()).hexdigest()[:12]


def test_profile_identity_tells_profiles_apart(tmp_path):
    from dataclasses import replace

    from qroute_cli.evaluation.provenance import profile_identity
    from qroute_cli.routing.latency import Machine, ModelProfile, Profile, load_profile, save_profile

    model = ModelProfile("m", "sha", 0.01, 500.0, 0.02, (0.03, 0.04), measured_at="2026-01-01T00:00:00+00:00")
    profile = Profile(Machine("cpu", 2, "0.3.36", 0), {"m": model})
    path = save_profile(profile, tmp_path / "p.json")
    assert profile_identity(profile) == hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert profile_identity(load_profile(path)) == profile_identity(profile)  # as read back
    slower = Profile(profile.machine, {"m": replace(model, decode_s=0.03)})
    assert profile_identity(slower) != profile_identity(profile)
    assert profile_identity(None) == "none"


def test_wait_quiet_is_reported_and_a_negative_count_is_refused(tmp_path, qroute_home):
    bad = _bench("--wait-quiet", "-1", "--cache", str(tmp_path / "bad.jsonl"))
    assert bad.returncode == 2 and "--wait-quiet" in bad.stderr and "Traceback" not in bad.stderr
    # No machine keeps a thousand cores busy: no cell waits, whatever else runs meanwhile.
    r = _bench("--json", "--wait-quiet", "1000", "--cache", str(tmp_path / "cache.jsonl"))
    assert r.returncode == 0, r.stderr
    waited = json.loads(r.stdout)["matrix_cells"]["waited_for_quiet"]
    assert waited == {"below_cores": 1000.0, "seconds": 0.0}
