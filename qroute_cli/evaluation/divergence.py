"""Does a drafter change the answer? Each drafted pair against its verifier run alone.

At temperature 0 a drafter is meant to change only the speed: the verifier accepts a drafted
token only where it would have chosen it. The result matrix shows the text can differ all the
same, so this counts, per pair with a drafter, the prompts whose text differs from the plain
verifier's (same verifier, no drafter) and the quality difference, with a paired bootstrap
interval over prompts.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from qroute_cli.evaluation import bootstrap
from qroute_cli.evaluation.matrix import Matrix
from qroute_cli.evaluation.tasks import Item


def plain_pairs(registry, pairs: Sequence[str]) -> dict[str, str]:
    """{drafted pair: the pair that runs its verifier alone}, for the drafted pairs among
    `pairs` whose plain verifier is among them too."""
    plain = {registry.pair(p).verifier: p for p in pairs if registry.pair(p).drafter == "none"}
    out = {}
    for p in pairs:
        pair = registry.pair(p)
        if pair.drafter != "none" and pair.verifier in plain:
            out[p] = plain[pair.verifier]
    return out


def divergence(m: Matrix, items: Sequence[Item], registry, counts: np.ndarray | None = None) -> list[dict]:
    """Per drafted pair: prompts whose text differs from the plain verifier's and the quality
    difference (drafted - plain), overall and per task. `counts` (bootstrap.resample_counts
    over `items`) adds a paired 95% interval to each difference; None leaves it out."""
    tasks = sorted({it.task for it in items})
    scopes = {"all": list(range(len(items)))}
    scopes.update({t: [i for i, it in enumerate(items) if it.task == t] for t in tasks})
    rows = []
    for pair, plain in plain_pairs(registry, m.pairs).items():
        drafted = [m.cell(it, pair) for it in items]
        alone = [m.cell(it, plain) for it in items]
        differs = np.array([d.text != a.text for d, a in zip(drafted, alone)], dtype=float)
        diff = np.array([d.quality - a.quality for d, a in zip(drafted, alone)])
        row: dict = {"pair": pair, "plain_pair": plain}
        for scope, idx in scopes.items():
            n = len(idx)
            q_d = sum(drafted[i].quality for i in idx) / n
            q_a = sum(alone[i].quality for i in idx) / n
            stats = {
                "n_prompts": n,
                "texts_differ": int(differs[idx].sum()),
                "share_differ": round(float(differs[idx].mean()), 4),
                "quality": round(q_d, 4),
                "plain_quality": round(q_a, 4),
            }
            if counts is None:
                stats["quality_difference"] = {"estimate": round(q_d - q_a, 4)}
            else:
                samples = bootstrap.resampled_means(diff[idx][None, :], counts[:, idx])[:, 0]
                stats["quality_difference"] = bootstrap.interval(samples.tolist(), q_d - q_a, 0.0)
            if scope == "all":
                row.update(stats)
            else:
                row.setdefault("by_task", {})[scope] = stats
        rows.append(row)
    return rows
