"""Does a prompt probe pay? The smallest local model's perplexity of the prompt, from one prefill.

    nice -n 10 python -m predictor.probe      # writes predictor/results/probe.json

For every prompt the shipped predictor was trained on (cv.json), smollm2-135m (one llama.cpp
thread) reads the prompt once with logits for every position; the probe features are the mean
negative log-likelihood of the prompt's tokens and the entropy of the next-token distribution
after the last one.
Reported: the prefill's cost in milliseconds (p50 / p95 on this machine, as loaded as it is),
each feature's within-task Spearman with every verifier's quality, and the within-task skill
the mean NLL adds to the shipped architecture's held-out predictions (a per-task linear blend
fitted in the same folds). Not shipped unless it pays: it would add a model load and the
prefill to every routing decision.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

from predictor import datagen, train
from qroute_cli.evaluation import provenance

PROBE_MODEL = "smollm2-135m"
OUT = train.RESULTS / "probe.json"


def probe_features(prompts: list[str]) -> tuple[np.ndarray, list[float]]:
    """(n, 2) [mean NLL of the prompt tokens, entropy after the last one] and each prefill's ms."""
    from qroute_cli.config import load_registry
    from qroute_cli.generation.pool import ModelPool

    registry = load_registry(None, include_user=False)
    feats, ms = np.zeros((len(prompts), 2)), []
    with ModelPool(registry, max_loaded=1, n_threads=1) as pool:
        backend = pool.get(PROBE_MODEL)
        backend.truncate(0)
        backend.eval(backend.tokenize("warm up"), logits="all")
        for i, prompt in enumerate(prompts):
            toks = backend.tokenize(prompt)
            backend.truncate(0)
            t0 = time.perf_counter()
            logits = backend.eval(toks, logits="all").astype(np.float64)
            ms.append((time.perf_counter() - t0) * 1000)
            logz = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
            logp = logits - logz[:, None]
            nll = -logp[np.arange(len(toks) - 1), toks[1:]]
            last = np.exp(logp[-1])
            feats[i] = (float(nll.mean()) if nll.size else 0.0, float(-(last * logp[-1]).sum()))
    return feats, ms


def main(argv: list[str] | None = None) -> int:
    from sklearn.model_selection import StratifiedKFold

    cv = json.loads((train.RESULTS / "cv.json").read_text())
    table = train.table_of(cv, datagen.DEFAULT_OUT)
    feats, ms = probe_features(table.prompts)
    out: dict = {"model": PROBE_MODEL, "prompts": len(table.prompts), "threads": 1,
                 "per_dataset": {d: int((table.datasets == d).sum()) for d in sorted(set(table.datasets))},
                 "prefill_ms": {"p50": float(np.percentile(ms, 50)), "p95": float(np.percentile(ms, 95))},
                 "signals": {}, "added": {}}
    for d in sorted(set(table.datasets)):
        idx = np.flatnonzero(table.datasets == d)
        out["signals"][d] = {name: {v: train._spearman(-feats[idx, k], table.quality[idx, j])
                                    for j, v in enumerate(table.verifiers)}
                             for k, name in enumerate(("lower prompt NLL", "lower next-token entropy"))}
    # What the NLL adds to the shipped architecture, held out: within each task, a ridge blend
    # of [held-out prediction, NLL] fitted on the other folds.
    from sklearn.linear_model import Ridge

    from predictor import difficulty
    from qroute_cli.routing.features import Featurizer

    feat = Featurizer()
    x = feat.hashed(table.prompts)
    models, _ = difficulty.fit_all(feat)
    scores = difficulty.cross_fitted(models, x, table.prompts)
    arch = cv["shipped"]
    oof = train.cross_validate(table, feat, x, scores, difficulty.stacked(models), 5, (arch,))[arch]["quality"]
    blended = oof.copy()
    skf = StratifiedKFold(5, shuffle=True, random_state=train.SEED)
    for tr, te in skf.split(table.prompts, table.datasets):
        for d in sorted(set(table.datasets)):
            a, b = tr[table.datasets[tr] == d], te[table.datasets[te] == d]
            if len(a) < 5 or not len(b):
                continue
            for j in range(len(table.verifiers)):
                u = lambda r: np.column_stack([oof[r, j], feats[r, 0]])  # noqa: E731
                blended[b, j] = Ridge(alpha=1.0).fit(u(a), table.quality[a, j]).predict(u(b))
    for name, pred in (("shipped", oof), ("shipped+nll", blended)):
        res = train.evaluate(table, {"quality": pred, "acceptance": np.zeros((len(oof), len(table.acc_keys))),
                                     "length": np.ones_like(oof)}, intervals=False)
        out["added"][name] = {d: {v: {"spearman": r["quality"][v]["spearman"], "auc": r["quality"][v]["auc"]}
                                  for v in table.verifiers} for d, r in res.items() if d != "all"}
    out["provenance"] = provenance.record(" ".join(["python", "-m", "predictor.probe", *(sys.argv[1:] if argv is None else argv)]),
                                          threads=1)
    OUT.write_text(json.dumps(out, indent=1))
    print(json.dumps({"prefill_ms": out["prefill_ms"], "signals": out["signals"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
