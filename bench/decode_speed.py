"""Prompt and generation speed of each built-in model with the installed llama.cpp build.

Like llama-bench: a fixed 128-token prompt is prefilled, then 64 tokens are decoded one at a
time (greedy), median of a few repeats. Used to compare llama.cpp builds and thread settings
side by side on this machine; `--hog` runs a busy process on one core meanwhile, to see what
a loaded machine does to each setting.

    .venv/bin/python -m bench.decode_speed
    .venv/bin/python -m bench.decode_speed --threads 1 --hog --models smollm2-135m
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m bench.decode_speed --hog
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import time
from pathlib import Path


def _busy(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def measure(path: Path, threads: int, n_prompt: int, n_gen: int, repeats: int) -> dict:
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=512, n_threads=threads, n_threads_batch=threads,
                n_batch=512, verbose=False)
    prompt = (llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 40))[:n_prompt]
    pp, tg = [], []
    for _ in range(repeats + 1):  # the first round warms up
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        t1 = time.perf_counter()
        tok = prompt[-1]
        for _ in range(n_gen):
            llm.eval([tok])
            tok = int(llm.scores[llm.n_tokens - 1].argmax())
        t2 = time.perf_counter()
        pp.append(len(prompt) / (t1 - t0))
        tg.append(n_gen / (t2 - t1))
    llm.close()
    return {"prompt_tps": round(statistics.median(pp[1:]), 1), "gen_tps": round(statistics.median(tg[1:]), 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="smollm2-135m,gemma-3-270m,qwen2.5-coder-0.5b,qwen2.5-coder-1.5b")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hog", action="store_true", help="keep one core busy with another process meanwhile")
    ap.add_argument("--label", default="", help="a name for this setting in the output")
    ap.add_argument("--out", type=Path, help="append one JSON line per model here")
    args = ap.parse_args()

    import llama_cpp

    from qroute_cli.config import load_registry
    from qroute_cli.evaluation import provenance
    from qroute_cli.models import cache

    reg = load_registry(None, include_user=False)
    made = provenance.record(command=" ".join(["python -m bench.decode_speed", *sys.argv[1:]]), threads=args.threads)
    stop = multiprocessing.Event()
    hog = multiprocessing.Process(target=_busy, args=(stop,), daemon=True) if args.hog else None
    if hog:
        hog.start()
    try:
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            path = cache.model_path(reg.model(name))
            if not path.exists():
                print(f"{name}: not installed (qroute models pull {name})", file=sys.stderr)
                continue
            row = {"label": args.label, "model": name, "threads": args.threads, "hog": args.hog,
                   "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
                   "llama_cpp": getattr(llama_cpp, "__file__", ""),
                   **measure(path, args.threads, args.prompt, args.gen, args.repeats), "provenance": made}
            print(json.dumps(row), flush=True)
            if args.out:
                with args.out.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    finally:
        if hog:
            stop.set()
            hog.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
