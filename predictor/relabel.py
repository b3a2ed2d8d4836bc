"""Recompute the n-gram acceptance labels of stored training rows, without generating again.

    python -m predictor.relabel            # predictor/data/responses.jsonl.gz, in place

N-gram acceptance is token arithmetic on the verifier's answer (engine.ngram_stats), so a
change in how it is counted needs no new generation. The label is the per-token rate the
cost curve assumes: draft tokens kept / draft tokens judged (the tokens after a rejection are
never judged). Each row also gets `ngram_coverage`, the share of steps on which the lookup
finds a draft. Rows record the rule in `acceptance_rule`; rows already on it are left alone.

The answer's tokens are re-made from its stored text (the generated ids are not stored); a
retokenised text can differ from the generated ids at a few merges, which moves a label by
far less than the spread between answers. Run it only while no datagen is appending to the
file: it rewrites the file through a temporary one.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from predictor.datagen import DEFAULT_OUT, read_rows, write_rows

RULE = "judged"  # acceptance = kept / judged draft tokens (engine.checked_tokens)


def relabel(path: Path, registry=None) -> int:
    """Recompute n-gram labels of rows not yet on RULE; returns how many rows changed."""
    from qroute_cli.config import load_registry
    from qroute_cli.generation import engine
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.generation.runner import prompt_tokens, user_messages

    registry = registry or load_registry(None, include_user=False)
    rows = {r["key"]: r for r in read_rows(path)}
    todo = [r for r in rows.values()
            if r.get("acceptance_rule") != RULE and any(k.endswith("+ngram") for k in r.get("acceptance", {}))]
    todo.sort(key=lambda r: r["model"])  # one model load per verifier
    with ModelPool(registry, max_loaded=1, n_threads=1) as pool:
        for r in todo:
            backend = pool.get(r["model"])
            ptoks = prompt_tokens(backend, registry.model(r["model"]), user_messages(r["prompt"]))[0]
            out = backend.tokenize(r["text"], add_bos=False, special=False) if r["text"] else []
            acceptance, coverage = engine.ngram_stats(ptoks, out)
            key = f"{r['model']}+ngram"
            r["acceptance"][key] = None if acceptance is None else round(acceptance, 4)
            r.setdefault("ngram_coverage", {})[key] = round(coverage, 4)
            r["acceptance_rule"] = RULE
    write_rows(path, rows.values())
    return len(todo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    print(f"relabelled: {relabel(args.out)} rows in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
