"""Generate the predictor's training data: every built-in verifier's greedy answer to training
prompts, with its stats, each drafter's acceptance rate on it, and automatic quality scores.

    python -m predictor.datagen --gsm8k 60 --nq 60 --wp 60 --code 60  # resumes where it stopped
    python -m predictor.datagen --gsm8k 600 --nq 600 --wp 500 --code 85 --n-gpu-layers -1   # on a GPU
    python -m predictor.datagen --gsm8k 60 --nq 300 --wp 60 --code 85 --user 20  # + 20 user-phrased each

Sources: the training side of each bench task (qroute_cli/evaluation/splits.py): GSM8K train,
NQ-open dev's train side, the WritingPrompts train sample, and code: HumanEval's training side
(85 problems, from the file qroute ships), whose answers score pass@1 in the code sandbox.

Output: append-only gzipped JSON Lines (predictor/data/responses.jsonl.gz by default), one
row per (prompt x verifier) with key "dataset:id:model"; rows already there are skipped, so a
larger amount extends a smaller run. Work goes in chunks (a few prompts of every data set,
then every verifier on them), so a run stopped early (`--until 12:35`) still covers all
verifiers on the same prompts. Acceptance needs no second generation: the drafter reads the
verifier's answer once, teacher-forced, and n-gram acceptance is token arithmetic.

`--user N` also asks the first N prompts of every data set the way a user would type them
(`Task.user_prompt`: no "briefly", "in a few words" or "under 100 words", no code block asked
for), at the default cap of `qroute run`; those rows say `"phrasing": "user"` and their key
carries "/user" after the id. They teach the length head how long answers run when the prompt
does not bound them.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import platform
import subprocess
import sys
import time
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

from qroute_cli.evaluation import splits
from qroute_cli.jsonl import parse_jsonl
from qroute_cli.evaluation.tasks import TASKS  # prompts, caps and scores shared with the bench

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "responses.jsonl.gz"


# How a training prompt is worded: "bench", the bench's own prompt with its answer-format
# instruction, at the task's cap; or "user", the question as a user would type it
# (Task.user_prompt), at the cap `qroute run` gives by default (models.toml max_tokens).
PHRASINGS = ("bench", "user")


def prompt_for(row: splits.Row, phrasing: str = "bench") -> str:
    task = TASKS[row.dataset]
    return task.user_prompt(row.question) if phrasing == "user" else task.prompt(row.question)


def row_key(dataset: str, id: str, model: str, phrasing: str = "bench") -> str:
    """A row's key: "dataset:id:model", with "/user" after the id for a user-phrased prompt."""
    return f"{dataset}:{id}{'/user' if phrasing == 'user' else ''}:{model}"


def read_rows(path: Path) -> list[dict]:
    """All complete rows of a (possibly multi-member, possibly cut-off) .jsonl[.gz] file."""
    if not path.exists():
        return []
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = _gunzip_tolerant(raw)
    return parse_jsonl(raw.decode("utf-8", errors="replace"), skip_broken=True)  # a write cut short loses its line


def caps_used(path: Path) -> dict[str, int]:
    """The answer cap each data set was generated with: the largest `max_tokens` its rows
    carry (the task's cap may have changed since), else the task's cap today."""
    stated: dict[str, int] = {}
    for row in read_rows(path):
        if row.get("max_tokens") and row.get("phrasing", "bench") == "bench":
            stated[row["dataset"]] = max(stated.get(row["dataset"], 0), int(row["max_tokens"]))
    return {d: stated.get(d, task.max_tokens) for d, task in TASKS.items()}


def _gunzip_tolerant(raw: bytes) -> bytes:
    """Concatenated gzip members; stops quietly at a truncated last member."""
    out = io.BytesIO()
    while raw:
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(raw)
        except zlib.error:
            break
        if not d.eof:
            break  # an unfinished member: its row was never fully written
        out.write(data)
        raw = d.unused_data
    return out.getvalue()


def append_row(path: Path, row: dict) -> None:
    """One gzip member per row: a crash loses at most the row being written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as fh:
        fh.write(gzip.compress((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")))
        fh.flush()
        os.fsync(fh.fileno())


def pack(path: Path) -> int:
    """Rewrite the file as one gzip stream (smaller), keeping one row per key; returns rows."""
    rows = {r["key"]: r for r in read_rows(path)}
    write_rows(path, rows.values())
    return len(rows)


def write_rows(path: Path, rows: Iterable[dict]) -> None:
    """Replace the file with `rows` as one gzip stream, through a temporary file, so a crash
    leaves the old file whole."""
    tmp = path.with_suffix(".tmp")
    with gzip.open(tmp, "wt", encoding="utf-8", compresslevel=9) as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)


def rescore(path: Path, data_root: Path | None = None) -> int:
    """Recompute `scores` of every row from its text (after a metric fix); returns rows changed."""
    refs = {(r.dataset, r.id): r.reference for d in splits.DATASETS for r in splits.train_rows(d, data_root)}
    rows = {r["key"]: r for r in read_rows(path)}
    changed = 0
    for r in rows.values():
        new = {k: round(v, 4) for k, v in TASKS[r["dataset"]].score(r["text"], refs[(r["dataset"], r["id"])]).items()}
        changed += new != r["scores"]
        r["scores"] = new
    write_rows(path, rows.values())
    return changed


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).parent, timeout=10,
        ).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def chunks(per_dataset: dict[str, list[splits.Row]], size: int) -> Iterator[list[splits.Row]]:
    """`size` prompts of each data set at a time, so an early stop leaves a balanced set."""
    i = 0
    while any(i < len(rows) for rows in per_dataset.values()):
        yield [r for rows in per_dataset.values() for r in rows[i: i + size]]
        i += size


def drafters_of(registry, verifier: str) -> list[str]:
    """Drafters the registry pairs with `verifier` (model names and/or 'ngram')."""
    out = []
    for p in registry.pairs.values():
        if p.verifier == verifier and p.drafter != "none" and p.drafter not in out:
            out.append(p.drafter)
    return out


def plain_pair(registry, verifier: str):
    from qroute_cli.types import Pair

    for p in registry.pairs.values():
        if p.verifier == verifier and p.drafter == "none":
            return p
    return Pair(verifier, verifier)


def generate_one(pool, registry, row: splits.Row, model: str, commit: str, phrasing: str = "bench") -> dict:
    """Greedy answer of `model` to one training prompt, with stats, acceptance and scores."""
    from qroute_cli.generation import engine
    from qroute_cli.generation.runner import prompt_tokens, run_prompt, user_messages
    from qroute_cli.types import GenerationConfig

    prompt = prompt_for(row, phrasing)
    messages = user_messages(prompt)
    task = TASKS[row.dataset]
    cap = registry.defaults.max_tokens if phrasing == "user" else task.max_tokens
    gen = run_prompt(pool, plain_pair(registry, model), messages, GenerationConfig(max_tokens=cap, temperature=0.0))
    backend = pool.get(model)
    ptoks = prompt_tokens(backend, registry.model(model), messages)[0]
    acceptance: dict[str, float | None] = {}
    accept_seconds: dict[str, float] = {}
    for drafter in drafters_of(registry, model):
        key = f"{model}+{drafter}"
        if drafter == "ngram":
            acceptance[key] = engine.ngram_acceptance(ptoks, gen.tokens)
        else:
            t0 = time.perf_counter()
            acceptance[key] = engine.teacher_forced_acceptance(pool.get(drafter), ptoks, gen.tokens)
            accept_seconds[key] = round(time.perf_counter() - t0, 3)
    s = gen.stats
    return {
        "key": row_key(row.dataset, row.id, model, phrasing),
        "dataset": row.dataset,
        "id": row.id,
        "phrasing": phrasing,
        "model": model,
        "prompt": prompt,
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "max_tokens": cap,
        "prompt_tokens": s.prompt_tokens,
        "output_tokens": s.output_tokens,
        "latency_s": round(s.latency_s, 4),
        "ttft_s": round(s.ttft_s, 4),
        "tokens_per_s": round(s.tokens_per_s, 3),
        "acceptance": {k: (None if v is None else round(v, 4)) for k, v in acceptance.items()},
        "acceptance_seconds": accept_seconds,
        "scores": {k: round(v, 4) for k, v in task.score(gen.text, row.reference).items()},
        "commit": commit,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


class Progress:
    """A Rich bar on a terminal, plain lines with an ETA in a log file."""

    def __init__(self, total: int, done: int) -> None:
        self.total, self.done, self.t0, self.new = total, done, time.perf_counter(), 0
        self.bar = None
        if sys.stderr.isatty():
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress
            from rich.progress import TextColumn, TimeElapsedColumn, TimeRemainingColumn

            self.bar = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), transient=False,
            )
            self.bar.start()
            self.task = self.bar.add_task("datagen", total=total, completed=done)

    def step(self, label: str) -> None:
        self.done += 1
        self.new += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done, description=label[:40])
            return
        rate = (time.perf_counter() - self.t0) / self.new
        eta = rate * (self.total - self.done)
        print(f"[{self.done}/{self.total}] {label}  {rate:.1f}s/row  ETA {eta / 60:.1f} min", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _past(until: str | None) -> bool:
    if not until:
        return False
    now = datetime.now(timezone.utc)
    hh, mm = (int(x) for x in until.split(":"))
    return (now.hour, now.minute) >= (hh, mm)


def run(
    amounts: dict[str, int],
    out: Path = DEFAULT_OUT,
    models: Iterable[str] | None = None,
    *,
    registry=None,
    chunk: int = 10,
    until: str | None = None,
    n_gpu_layers: int = 0,
    n_threads: int | None = 1,
    data_root: Path | None = None,
    workers: int = 1,
    worker: int = 0,
    user: dict[str, int] | None = None,
) -> int:
    """Generate missing rows (`amounts` bench-phrased prompts per data set, then `user`
    user-phrased ones: the first of the same prompts); returns how many were added."""
    from qroute_cli.config import load_registry
    from qroute_cli.generation.pool import ModelPool

    registry = registry or load_registry(None, include_user=False)
    verifiers = list(models) if models else sorted({p.verifier for p in registry.pairs.values()})
    user = user or {}
    # One sampled order per data set, read once: the user-phrased prompts are a prefix of it too.
    longest = {d: max(amounts.get(d, 0), user.get(d, 0)) for d in [*amounts, *user]}
    ordered = {d: splits.sample(splits.train_rows(d, data_root), n) for d, n in longest.items() if n > 0}
    per_dataset = {d: ordered[d][:n] for d, n in amounts.items() if n > 0}
    per_user = {d: ordered[d][:n] for d, n in user.items() if n > 0}
    have = {r["key"] for r in read_rows(out)}
    # Workers split the same ordered work list row by row, so parallel processes finish
    # chunks together instead of one racing ahead on the cheap models. Bench-phrased prompts
    # come first, then the user-phrased ones.
    order = [(m, r, "bench") for block in chunks(per_dataset, chunk) for m in verifiers for r in block]
    order += [(m, r, "user") for block in chunks(per_user, chunk) for m in verifiers for r in block]
    mine = [work for i, work in enumerate(order) if i % workers == worker]
    total = len(mine)
    done = sum(1 for m, r, ph in mine if row_key(r.dataset, r.id, m, ph) in have)
    commit = git_commit()
    progress = Progress(total, done)
    added = 0
    try:
        with ModelPool(registry, max_loaded=2, n_gpu_layers=n_gpu_layers, n_threads=n_threads) as pool:
            for model, row, phrasing in mine:  # chunk by chunk, model-major inside a chunk: few reloads
                key = row_key(row.dataset, row.id, model, phrasing)
                if key in have:
                    continue
                if _past(until):
                    print(f"Stopped at {until} UTC as asked; rerun to continue.", file=sys.stderr)
                    return added
                rec = generate_one(pool, registry, row, model, commit, phrasing)
                append_row(out, rec)
                have.add(key)
                added += 1
                progress.step(f"{key} {rec['output_tokens']}tok q={rec['scores']['quality']:.2f}")
    finally:
        progress.close()
    return added


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m predictor.datagen", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gsm8k", type=int, default=60, help="GSM8K train prompts")
    ap.add_argument("--nq", type=int, default=60, help="NQ-open dev prompts (train side of the split)")
    ap.add_argument("--wp", type=int, default=60, help="WritingPrompts train-sample prompts")
    ap.add_argument("--code", type=int, default=60,
                    help="HumanEval problems on the training side of its split (85 in all; scored pass@1 in the sandbox)")
    ap.add_argument("--user", type=int, default=0,
                    help="also ask the first N prompts of every data set as a user would (no answer-format "
                         "instruction, the default max_tokens cap): how long answers run unbounded")
    ap.add_argument("--models", default="", help="comma-separated verifier models (default: all built-in)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--chunk", type=int, default=10, help="prompts per data set per chunk")
    ap.add_argument("--until", default=None, help="HH:MM (UTC): stop starting new rows after this time")
    ap.add_argument("--threads", type=int, default=1,
                    help="llama.cpp threads; 1 is far faster than 2 on a busy 2-core machine (0: llama's default)")
    ap.add_argument("--n-gpu-layers", type=int, default=0, help="-1 offloads everything (CUDA build)")
    ap.add_argument("--workers", type=int, default=1, help="parallel processes sharing the work (each gets --worker)")
    ap.add_argument("--worker", type=int, default=0, help="this process's index, 0 .. workers-1")
    ap.add_argument("--pack", action="store_true", help="only recompress --out into one gzip stream")
    ap.add_argument("--rescore", action="store_true", help="only recompute the scores from the stored texts (then pack)")
    args = ap.parse_args(argv)
    if args.rescore:
        print(f"rescored: {rescore(args.out)} rows changed")
    if args.pack or args.rescore:
        print(f"{pack(args.out)} rows in {args.out}")
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()] or None
    added = run(
        {"gsm8k": args.gsm8k, "nq": args.nq, "wp": args.wp, "code": args.code}, args.out, models,
        chunk=args.chunk, until=args.until, n_gpu_layers=args.n_gpu_layers, n_threads=args.threads or None,
        workers=args.workers, worker=args.worker,
        user={d: args.user for d in ("gsm8k", "nq", "wp", "code")},
    )
    print(f"added {added} rows to {args.out} ({platform.node()}, commit {git_commit()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
