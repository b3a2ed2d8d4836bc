"""qroute's engine against the llama.cpp tools a user would pick instead, in one run.

Same model files, same prompts (bench.engine's), same prompt tokens, greedy, the same thread
count everywhere, after a short warm-up `--repeats` runs per prompt and mode (default one),
each row the run of median speed:
  - qroute plain, qroute n-gram, qroute model-draft (drafting by this setup's cost curve, as
    bench.engine does; --no-curve: by acceptance alone, no calibration),
  - llama-server plain, llama-server with the draft model (-md), llama-server with each n-gram
    speculation type of --spec-types (e.g. ngram-simple: prompt lookup),
  - llama-cpp-python's prompt-lookup path (LlamaPromptLookupDecoding as its draft_model).
Each row: tokens/s (generated tokens over prefill + decode time, every engine reading the prompt
afresh: qroute's latency with its KV cache emptied first, llama-cpp-python's time around
generate, llama-server's own prompt_ms + predicted_ms, so HTTP is not counted), the ratio to
qroute plain, the drafted/accepted counts, and the token agreement with qroute plain. llama-server gets the prompt as qroute's token ids
(/completion), with prompt caching off and qroute's stop strings, so both decode the same input.
Rows and provenance (commit, machine, threads, command, the llama-server build) go to
bench/results/native.json.

llama-server comes from scripts/build_llama_tools.sh (or QROUTE_LLAMA_BIN_DIR).

    .venv/bin/python -m bench.native                          # Qwen 1.5B verifier, 0.5B drafter, 128 tokens
    .venv/bin/python -m bench.native -n 8 --prompts write-code --no-curve   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench.engine import PROMPTS, agreement, setup_profile
from qroute_cli.config import load_registry
from qroute_cli.evaluation import provenance
from qroute_cli.generation.backends.llama import reference_completion
from qroute_cli.generation.llama_tools import LlamaServer, Speculation, bin_dir, build_info, find_tool
from qroute_cli.generation.pool import ModelPool
from qroute_cli.generation.runner import prompt_tokens, run_prompt, user_messages
from qroute_cli.generation.threads import CpuLoad, threads_for
from qroute_cli.models import cache
from qroute_cli.routing.latency import cost_curve
from qroute_cli.types import GenerationConfig, Pair

WARMUP_TOKENS = 8


def server_completion(server: LlamaServer, tokens: list[int], max_tokens: int, stops) -> dict:
    """One greedy /completion of the prompt's token ids: the generated ids, seconds (the server's
    prefill + decode time) and drafted/accepted counts."""
    answer = server.post_json("/completion", {
        "prompt": tokens, "n_predict": max_tokens, "temperature": 0.0, "top_k": 1, "seed": 0,
        "cache_prompt": False, "return_tokens": True, "stop": list(stops),
    })
    timings = answer["timings"]
    drafted = timings.get("draft_n")
    return {"tokens": list(answer.get("tokens", [])), "seconds": (timings["prompt_ms"] + timings["predicted_ms"]) / 1000,
            "drafted": drafted, "accepted": timings.get("draft_n_accepted"),
            "acceptance": timings["draft_n_accepted"] / drafted if drafted else None,
            "prompt_ms": timings["prompt_ms"], "predicted_ms": timings["predicted_ms"]}


def tokens_per_s(run: dict) -> float:
    """A run's speed: tokens over seconds (0 for a run that took no time)."""
    return len(run["tokens"]) / run["seconds"] if run["seconds"] else 0.0


def median_run(runs: list[dict]) -> dict:
    """The run of median speed (the lower middle one of an even count)."""
    ordered = sorted(runs, key=tokens_per_s)
    return ordered[(len(ordered) - 1) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--verifier", default="qwen2.5-coder-1.5b")
    ap.add_argument("--drafter", default="qwen2.5-coder-0.5b", help="the draft model ('none': no model-draft rows)")
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=1,
                    help="measured runs per prompt and mode, alternating the qroute modes; each row keeps the median")
    ap.add_argument("--prompts", default=",".join(PROMPTS), help=f"comma-separated, of: {', '.join(PROMPTS)}")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for every engine (default: what qroute would pick now, fixed for the run)")
    ap.add_argument("--spec-types", default="ngram-simple",
                    help="llama-server n-gram speculation types to run, comma-separated ('' for none)")
    ap.add_argument("--no-curve", action="store_true",
                    help="qroute drafts by acceptance alone (no calibration profile needed)")
    ap.add_argument("--profile", type=Path, default=None, help="a calibration profile JSON (default: this setup's)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "native.json")
    args = ap.parse_args()
    names = [p for p in args.prompts.split(",") if p]
    unknown = set(names) - set(PROMPTS)
    if unknown:
        ap.error(f"unknown prompts: {', '.join(sorted(unknown))}; known: {', '.join(PROMPTS)}")
    drafter = None if args.drafter in ("", "none") else args.drafter
    spec_types = [t for t in args.spec_types.split(",") if t]
    find_tool("llama-server")  # before anything slow: say how to build it
    threads = args.threads or threads_for(os.cpu_count() or 1, CpuLoad().others())

    reg = load_registry(None, include_user=False)
    vspec = reg.model(args.verifier)
    pairs = {"qroute plain": Pair("plain", args.verifier), "qroute ngram": Pair("ngram", args.verifier, "ngram")}
    if drafter:
        pairs["qroute model-draft"] = Pair("model", args.verifier, drafter)
    reg.pairs.update({p.name: p for p in pairs.values()})
    verifier_path = cache.require(vspec)
    drafter_path = cache.require(reg.model(drafter)) if drafter else None
    per_engine = ["-tb", str(threads), "-ngl", "0"]
    server_modes = {"llama-server plain": Speculation()}
    if drafter_path:
        server_modes["llama-server -md"] = Speculation(draft_model=drafter_path)
    for kind in spec_types:
        server_modes[f"llama-server {kind}"] = Speculation(spec_type=kind)

    console = Console()
    cfg = GenerationConfig(max_tokens=args.max_tokens)
    repeats = max(1, args.repeats)
    measured: dict[str, dict[str, list[dict]]] = {name: defaultdict(list) for name in names}  # prompt -> mode -> runs
    server_commands: dict[str, list[str]] = {}
    with ModelPool(reg, n_threads=threads) as pool:
        if args.no_curve:
            curves, profile_source = {label: None for label in pairs}, "none (--no-curve)"
        else:
            profile, profile_source = setup_profile(pool, list(pairs.values()), args.profile, console)
            curves = {label: cost_curve(profile, pair) for label, pair in pairs.items()}
        verifier = pool.get(args.verifier)
        prompts = {}
        for name in names:
            msgs = user_messages(PROMPTS[name])
            toks, stops = prompt_tokens(verifier, vspec, msgs)
            prompts[name] = (msgs, toks, stops)

        console.print(f"[dim]qroute and llama-cpp-python, {threads} thread(s)...[/]")
        lcp = None
        for name, (msgs, toks, _) in prompts.items():
            for label, pair in pairs.items():
                run_prompt(pool, pair, msgs, GenerationConfig(max_tokens=WARMUP_TOKENS), costs=curves[label])
            _, _, lcp = reference_completion(vspec, verifier_path, toks, WARMUP_TOKENS, prompt_lookup=10,
                                             n_threads=threads, llm=lcp)
            for _ in range(repeats):
                for label, pair in pairs.items():
                    pool.speed.pop(pair.name, None)  # the measured run starts without speed memory
                    for model in pool.loaded():  # and reads the prompt afresh, as the other engines do
                        pool.get(model).truncate(0)
                    gen = run_prompt(pool, pair, msgs, cfg, costs=curves[label])
                    measured[name][label].append({"tokens": list(gen.tokens), "seconds": gen.stats.latency_s,
                                              "drafted": gen.stats.drafted if pair.drafter else None,
                                              "accepted": gen.stats.accepted if pair.drafter else None,
                                              "acceptance": gen.stats.acceptance, "ttft_s": gen.stats.ttft_s,
                                              "threads": pool.last_threads})
                out, secs, lcp = reference_completion(vspec, verifier_path, toks, args.max_tokens, prompt_lookup=10,
                                                      n_threads=threads, llm=lcp)
                measured[name]["llama-cpp-python prompt lookup"].append(
                    {"tokens": out, "seconds": secs, "drafted": None, "accepted": None, "acceptance": None})
        if lcp is not None:
            lcp.close()

    # One server at a time, after qroute's models are closed: no two engines share the cores.
    for label, spec in server_modes.items():
        extra = per_engine + (["-td", str(threads), "-tbd", str(threads), "-ngld", "0"] if spec.draft_model else [])
        console.print(f"[dim]{label}...[/]")
        with LlamaServer(verifier_path, speculation=spec, threads=threads, ctx=vspec.n_ctx,
                         extra_args=extra) as server:
            server_commands[label] = server.command(server.port)
            for name, (_, toks, stops) in prompts.items():
                server_completion(server, toks, WARMUP_TOKENS, stops)
                for _ in range(repeats):
                    measured[name][label].append(server_completion(server, toks, args.max_tokens, stops))

    # Each mode's run of median speed stands for it (its tokens, counts and times together).
    results = {name: {label: median_run(rs) for label, rs in modes.items()} for name, modes in measured.items()}
    rows = []
    for name, runs in results.items():
        plain = runs["qroute plain"]
        base_tps = tokens_per_s(plain)
        for label, run in runs.items():
            tps = tokens_per_s(run)
            rows.append({
                "prompt": name, "mode": label, "tokens_per_s": round(tps, 2),
                "ratio_vs_qroute_plain": round(tps / base_tps, 3) if base_tps else None,
                "tokens": len(run["tokens"]), "seconds": round(run["seconds"], 4),
                "drafted": run["drafted"], "accepted": run["accepted"],
                "acceptance": None if run["acceptance"] is None else round(run["acceptance"], 3),
                "agreement_with_plain": round(agreement(run["tokens"], plain["tokens"]), 3),
                **{k: run[k] for k in ("ttft_s", "prompt_ms", "predicted_ms", "threads") if k in run},
                "runs": len(measured[name][label]),
                "tokens_per_s_each": [round(tokens_per_s(r), 2) for r in measured[name][label]],
            })

    table = Table(title=f"qroute vs llama.cpp-native: {args.verifier}"
                        f"{' + ' + drafter if drafter else ''}, {args.max_tokens} tokens, {threads} thread(s), "
                        f"{'one run' if repeats == 1 else f'median of {repeats} runs'}")
    for col in ("prompt", "mode", "tok/s", "x qroute plain", "acceptance", "agrees w/ plain", "tokens"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["prompt"], r["mode"], f"{r['tokens_per_s']:.1f}", f"{r['ratio_vs_qroute_plain']:.2f}",
                      "-" if r["acceptance"] is None else f"{r['acceptance']:.0%}",
                      f"{r['agreement_with_plain']:.0%}", str(r["tokens"]))
    console.print(table)

    folder = bin_dir()
    meta = {
        **provenance.record(" ".join([Path(sys.executable).name, "-m", "bench.native", *sys.argv[1:]]), threads),
        "verifier": args.verifier, "drafter": drafter, "max_tokens": args.max_tokens, "prompts": names,
        "repeats": repeats,
        "profile": profile_source, "llama_server_build": build_info(folder) if folder else {},
        "llama_server_commands": server_commands, "lookup_num_pred_tokens": 10,
        "time_measured": "prefill + decode, prompt read afresh: qroute's latency_s (KV cache emptied first), "
                         "llama-cpp-python's wall clock around generate, llama-server's prompt_ms + predicted_ms",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    console.print(f"[dim]raw results: {args.out}[/]")


if __name__ == "__main__":
    main()
