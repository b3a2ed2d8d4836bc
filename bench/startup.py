"""Start-up cost of a one-shot `qroute run`, side by side with a bare llama-cpp-python script.

Shell loops call qroute once per prompt and pay its start-up every time. This times, end to
end and alternating, N rounds of:

  (a) `qroute run --pair smollm2-135m -n 8 --threads 1 "What is the capital of France?"`
  (b) a bare script that loads the same GGUF with llama-cpp-python and generates the same
      8 tokens through the model's chat template (`create_chat_completion`, greedy), with the
      same context size and thread count
  (c) `qroute --help`
  (d) (a) again in a data dir that has a calibration profile for the model, as a user's has
      after the first routed run (the router reads the profile and the learning store)
  (e) (d) again with a learning store of --history runs (default: as many as the router
      replays at start, tuning.ROUTING.replay_runs), as a shell loop leaves it. They are copies
      of (e)'s own first run; the warm-up round folds them and keeps the estimates beside the
      store (routing/snapshot.py), so each timed run folds only the runs logged since.
  (f) (d) with the model's n-gram pair (--drafting-pair, default PAIR+ngram): it drafts by the
      pair's mean acceptance for the prompt's task type (scoring.acceptance_priors), moved by
      its logged runs, so like (d) it loads no quality predictor beside the model.

and reports each one's median, the ratio to (b) with a bootstrap 95% interval, and the range
of the per-round ratios. `--pair` needs no calibration (a forced pair is never
measured), so (a) runs in a fresh QROUTE_HOME made for the bench; (d) in a second one where
`qroute calibrate --quick -m MODEL` ran first. The first round creates the learning stores and
is a warm-up, like one warm-up run of (b) and (c). Byte code is cached in a temporary
PYTHONPYCACHEPREFIX for all three (the warm-up writes it), so an environment that sets
PYTHONDONTWRITEBYTECODE does not make every run compile qroute from source.

    .venv/bin/python -m bench.startup
    .venv/bin/python -m bench.startup --runs 11 --out /tmp/startup.json

Writes bench/results/startup.json (commit, date, CPU model, load average before and after,
the commands and every sample).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qroute_cli.evaluation.provenance import source_commit
from qroute_cli.routing.latency import cpu_detail, cpu_model
from qroute_cli.tuning import ROUTING

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "What is the capital of France?"

BARE = """\
import sys
from llama_cpp import Llama

path, n_ctx, threads, n, prompt = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False)
out = llm.create_chat_completion([{"role": "user", "content": prompt}], max_tokens=n, temperature=0.0)
print(out["choices"][0]["message"]["content"])
"""


def _qroute(root: Path) -> list[str]:
    """What the `qroute` console script runs, with qroute_cli imported from `root`."""
    code = f"import sys; sys.path.insert(0, {str(root)!r}); sys.argv[0] = 'qroute'; " \
           "from qroute_cli.cli import main; sys.exit(main())"
    return [sys.executable, "-c", code]


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds from start to exit, and stdout; a failed command stops the bench."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr}")
    return seconds, proc.stdout


def _fill_history(home: Path, n: int) -> None:
    """Copy the one run logged in `home`'s learning store until it holds `n` runs."""
    import sqlite3

    with sqlite3.connect(home / "data" / "runs.db") as db:
        columns = ", ".join(row[1] for row in db.execute("PRAGMA table_info(runs)") if row[1] != "id")
        while db.execute("SELECT COUNT(*) FROM runs").fetchone()[0] < n:
            db.execute(f"INSERT INTO runs ({columns}) SELECT {columns} FROM runs")
        db.execute("DELETE FROM runs WHERE id NOT IN (SELECT id FROM runs ORDER BY id LIMIT ?)", (n,))


def _bootstrap_ratio(a: list[float], b: list[float], rounds: int = 2000) -> tuple[float, float]:
    """95% interval of median(a) / median(b), resampling each side independently."""
    rng = random.Random(0)
    ratios = sorted(
        statistics.median(rng.choices(a, k=len(a))) / statistics.median(rng.choices(b, k=len(b)))
        for _ in range(rounds)
    )
    return ratios[int(0.025 * rounds)], ratios[int(0.975 * rounds) - 1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="rounds of (a, b, c), after one warm-up round")
    ap.add_argument("--pair", default="smollm2-135m")
    ap.add_argument("--tokens", "-n", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prompt", default=PROMPT)
    ap.add_argument("--drafting-pair", help="(f)'s pair (default: PAIR+ngram)")
    ap.add_argument("--history", type=int, default=ROUTING.replay_runs,
                    help="runs in (e)'s learning store (default: what the router replays, %(default)s)")
    ap.add_argument("--baseline", type=Path, metavar="DIR",
                    help="also time (a) and (c) with the qroute_cli of DIR, e.g. an earlier commit's: "
                         "mkdir DIR && git archive REV qroute_cli | tar -x -C DIR")
    ap.add_argument("--baseline-label", metavar="TEXT", help="what DIR holds, for the results file (e.g. 'commit abc1234')")
    ap.add_argument("--no-bytecode-cache", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE as set and no cache prefix: with it set, every run "
                         "compiles qroute from source, as in an environment that forbids byte code")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "startup.json")
    args = ap.parse_args()

    from qroute_cli import paths
    from qroute_cli.config import load_registry

    reg = load_registry(None)
    spec = reg.model(reg.pair(args.pair).verifier)
    gguf = paths.cache_dir() / f"{spec.name}.gguf"
    if not gguf.exists():
        raise SystemExit(f"{gguf} is missing: run `qroute models pull {spec.name}` first.")

    home = Path(tempfile.mkdtemp(prefix="qroute-startup-"))
    env = {k: v for k, v in os.environ.items() if k != "QROUTE_CONFIG"}
    env.update(QROUTE_HOME=str(home / "home"), QROUTE_MODELS=str(paths.cache_dir()))
    if not args.no_bytecode_cache:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
    calibrated = {**env, "QROUTE_HOME": str(home / "calibrated")}
    history = {**env, "QROUTE_HOME": str(home / "history")}
    run_args = ["run", "--pair", args.pair, "-n", str(args.tokens), "--threads", str(args.threads), args.prompt]
    print(f"calibrating {spec.name} at --threads {args.threads} for (d), (e) and (f) ...", flush=True)
    _time(_qroute(ROOT) + ["calibrate", "--quick", "-m", spec.name, "--threads", str(args.threads)], calibrated)
    shutil.copytree(home / "calibrated", home / "history")
    _time(_qroute(ROOT) + run_args, history)
    _fill_history(home / "history", args.history)
    drafting = args.drafting_pair or f"{args.pair}+ngram"
    reg.pair(drafting)
    homes = {"qroute_run_calibrated": calibrated, "qroute_run_history": history, "qroute_run_drafting": calibrated}
    commands = {
        "qroute_run": _qroute(ROOT) + run_args,
        "qroute_run_calibrated": _qroute(ROOT) + run_args,
        "qroute_run_history": _qroute(ROOT) + run_args,
        "qroute_run_drafting": _qroute(ROOT) + [drafting if a == args.pair else a for a in run_args],
        "bare_llama_cpp": [sys.executable, "-c", BARE, str(gguf), str(spec.n_ctx), str(args.threads),
                           str(args.tokens), args.prompt],
        "qroute_help": _qroute(ROOT) + ["--help"],
    }
    if args.baseline:
        commands["baseline_run"] = _qroute(args.baseline.resolve()) + run_args
        commands["baseline_help"] = _qroute(args.baseline.resolve()) + ["--help"]
    samples: dict[str, list[float]] = {name: [] for name in commands}
    outputs: dict[str, str] = {}
    load_before = os.getloadavg()
    try:
        for round_ in range(args.runs + 1):  # round 0 warms up: byte code, the learning store
            for name, cmd in commands.items():
                seconds, out = _time(cmd, homes.get(name, env))
                if round_:
                    samples[name].append(seconds)
                else:
                    outputs[name] = out.strip()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    load_after = os.getloadavg()

    med = {name: statistics.median(s) for name, s in samples.items()}
    ratios = {}
    for run in ("qroute_run", "qroute_run_calibrated", "qroute_run_history", "qroute_run_drafting", "baseline_run"):
        if run in samples:
            a, b = samples[run], samples["bare_llama_cpp"]
            per_round = [x / y for x, y in zip(a, b)]
            ratios[run] = {"median_ratio": round(med[run] / med["bare_llama_cpp"], 3),
                           "bootstrap_95": [round(x, 3) for x in _bootstrap_ratio(a, b)],
                           "per_round_range": [round(min(per_round), 3), round(max(per_round), 3)]}
    shown = {name: "qroute " + " ".join(cmd[3:]) for name, cmd in commands.items()}
    shown["qroute_run_calibrated"] += f"  (after qroute calibrate --quick -m {spec.name} --threads {args.threads})"
    shown["qroute_run_history"] += f"  (as (d), with {args.history} runs in the learning store)"
    shown["qroute_run_drafting"] += "  (in (d)'s data dir)"
    shown["bare_llama_cpp"] = f"python -c BARE {' '.join(commands['bare_llama_cpp'][3:])}"
    if args.baseline:
        for name in ("baseline_run", "baseline_help"):
            shown[name] = f"qroute (qroute_cli from {args.baseline}) " + " ".join(commands[name][3:])
    result = {
        "bench": "startup",
        "commit": source_commit(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": {"cpu": cpu_model(), "cpu_detail": cpu_detail(), "cores": os.cpu_count(), "python": platform.python_version()},
        "load_average": {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in load_after]},
        "threads": args.threads,
        "runs": args.runs,
        "history_runs": args.history,
        "bytecode_cache": not args.no_bytecode_cache,
        "commands": shown,
        "bare_script": BARE,
        "median_s": {name: round(v, 3) for name, v in med.items()},
        "samples_s": {name: [round(x, 3) for x in s] for name, s in samples.items()},
        "ratio_over_bare": ratios,
        "baseline_label": args.baseline_label or (str(args.baseline) if args.baseline else None),
        "answers": {name: outputs[name] for name in outputs if not name.endswith("help")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")

    print(f"{cpu_model()}, {os.cpu_count()} cores, --threads {args.threads}, {args.runs} rounds; "
          f"load average {load_before[0]:.2f} before, {load_after[0]:.2f} after")
    for name, v in med.items():
        print(f"  {name:21s} median {v:6.3f} s  (min {min(samples[name]):.3f}, max {max(samples[name]):.3f})")
    for run, r in ratios.items():
        low, high = r["bootstrap_95"]
        lo, hi = r["per_round_range"]
        print(f"  {run} / bare: {r['median_ratio']:.2f}x  (bootstrap 95% {low:.2f}-{high:.2f}; per round {lo:.2f}-{hi:.2f})")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
