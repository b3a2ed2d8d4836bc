"""Where does a scorer's routing edge on one task come from? Swap one head at a time.

    nice -n 10 python -m predictor.head_swap      # writes predictor/results/head_swap.json

On the bench, the length-only scorer routes GSM8K better than the shipped architecture
(per-task hypervolume ratio), though it is far worse overall. This routes the dev split (the
held-out predictions of predictor.train's routing selection, on the prompts the shipped file
was trained on, as predictor/results/cv.json lists them) with the shipped architecture's
predictions, and with one of its heads (quality, length, acceptance) replaced on GSM8K's
prompts by length-only's, and reports each head's within-GSM8K fit: Spearman of predicted
against measured quality, of the predicted 1.5B-minus-0.5B quality gap against the measured
one, and predicted over measured answer length.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from predictor import datagen, difficulty, routing_value, train
from qroute_cli.evaluation import provenance
from qroute_cli.routing.features import Featurizer

OUT = train.RESULTS / "head_swap.json"
TASK = "gsm8k"
OTHER = "length-only"
HEADS = ("quality", "length", "acceptance")
STRONG, WEAK = "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"


def swapped(base: dict[str, np.ndarray], other: dict[str, np.ndarray], rows: np.ndarray, head: str) -> dict:
    """`base`'s predictions with `head` taken from `other` on `rows`."""
    out = {k: v.copy() for k, v in base.items()}
    out[head][rows] = other[head][rows]
    return out


def head_fit(t: train.Table, pred: dict[str, np.ndarray], rows: np.ndarray) -> dict:
    """Within-task fit of each head on `rows`."""
    v = t.verifiers
    q, y = pred["quality"][rows], t.quality[rows]
    s, w = v.index(STRONG), v.index(WEAK)
    out = {"quality_spearman": {name: train._spearman(q[:, j], y[:, j]) for j, name in enumerate(v)},
           "gap_spearman": train._spearman(q[:, s] - q[:, w], y[:, s] - y[:, w]),
           "length_pred_over_measured_median": {}}
    for j, name in enumerate(v):
        ok = ~np.isnan(t.length[rows, j]) & (t.length[rows, j] > 0)
        ratio = pred["length"][rows][ok, j] / t.length[rows][ok, j]
        out["length_pred_over_measured_median"][name] = float(np.median(ratio)) if ok.any() else None
    return out


def main(argv: list[str] | None = None) -> int:
    from threadpoolctl import threadpool_limits

    argv = list(sys.argv[1:] if argv is None else argv)
    cv = json.loads((train.RESULTS / "cv.json").read_text())
    base = cv["shipped"]
    with threadpool_limits(1):
        t = train.table_of(cv, datagen.DEFAULT_OUT)
        feat = Featurizer()
        x = feat.hashed(t.prompts)
        models, _ = difficulty.fit_all(feat)
        scores = difficulty.cross_fitted(models, x, t.prompts)
        _, sim = train.routing_selection(t, feat, x, scores, difficulty.stacked(models), (base, OTHER),
                                         routing_value.DEFAULT_PROFILE, None)
        if sim is None:
            print("the rows cannot be simulated (no profile, or too few prompts)", file=sys.stderr)
            return 1
        rows = t.datasets == TASK

        def routed(name: str, pred: dict) -> dict:
            s = routing_value.summary(sim.route(name, pred), sim.items)
            return {scope: {"hypervolume_ratio": r["hypervolume_ratio"], "gain_abs": r["gain_abs"]} for scope, r in s.items()}

        a, b = sim.preds[base], sim.preds[OTHER]
        out = {"task": TASK, "base": base, "other": OTHER, "prompts": int(rows.sum()),
               "routed": {base: routed(base, a), OTHER: routed(OTHER, b)},
               "fit": {base: head_fit(t, a, rows), OTHER: head_fit(t, b, rows)}}
        for head in HEADS:
            name = f"{base} with {OTHER}'s {head} on {TASK}"
            out["routed"][name] = routed(name, swapped(a, b, rows, head))
    out["provenance"] = provenance.record(" ".join(["python", "-m", "predictor.head_swap", *argv]), threads=1)
    OUT.write_text(json.dumps(out, indent=1, default=float))
    for name, r in out["routed"].items():
        print(f"{name}: all {r['all']['hypervolume_ratio']:.3f}, {TASK} {r[TASK]['hypervolume_ratio']:.3f}")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
