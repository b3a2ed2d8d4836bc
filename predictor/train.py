"""Train the quality predictor, choose it by routing value, export it to ONNX.

    nice -n 10 python -m predictor.train          # everything below, then ships the chosen file
    python -m predictor.train --ship task-ridge    # force the architecture that ships

Data: predictor/data/responses.jsonl.gz (predictor/datagen.py), whatever rows it holds now:
one example per prompt answered by every verifier; targets are quality per verifier,
acceptance per (verifier, drafter) and log1p(output tokens) per verifier, learned jointly.

Features (qroute_cli/routing/features.py, shared with serving): hashed WordPiece uni+bigrams,
8 shape features and the router's task type as one-hot columns. Two difficulty models
(predictor/difficulty.py) read the same features inside the graph: GSM8K calculator steps
(from 7,473 reference solutions) and EVOUNA's share of strong QA systems judged right.

Architectures:
- hashed-ridge       ridge on the features, pooled across tasks (the previous shipped model)
- hashed-mlp         the same features -> one hidden layer
- task-linear        per-task intercepts and per-task slopes on length, numbers and the two
                     difficulty scores (task one-hot x feature), ridge; no n-grams
- task-ridge         task-linear plus the hashed n-grams at a lower weight
- task-ridge-nodiff  task-ridge without the difficulty scores (what they add)
- task-linear-cal, task-ridge-cal
                     the same, with each task's quality predictions shrunk towards that task's
                     mean by how well they rank held-out prompts of it (`calibrate`): where a
                     model cannot tell a task's prompts apart, per-prompt noise stops steering
                     the router there
Baselines: task-mean (per detected task type), length-only (pooled slope on prompt length),
and, in routing only, the per-model priors of models.toml.

Choice: a fixed-hash quarter of the training prompts (`dev_side`) is held out; every
architecture is fitted on the rest and routes the held-out prompts in a simulation of the
bench (predictor/routing_value.py); the best static-frontier gain ships, refitted on every
row. Held-out accuracy is reported from K-fold out-of-fold predictions (no prompt in its own
training fold), within each task, with bootstrap intervals; a learning curve shows within-task
skill against the number of training prompts per task. Results: predictor/results/cv.json.

Answer lengths are predicted at today's caps. GSM8K rows made at the old 256-token cap that
ended by "length" are right-censored: their length is imputed as the expected log-length
above the cap under a censored normal fit per (data set, verifier), capped at 384 (`impute_censored`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from predictor import datagen, difficulty, export, priors
from qroute_cli.evaluation import provenance, splits
from qroute_cli.evaluation.tasks import TASKS
from qroute_cli.routing.predict import DATASET_TASKS
from qroute_cli.routing.features import DENSE_NAMES, PREDICTOR_DIR, TASK_TYPES, TOKENIZER_FILE, Featurizer, \
    FeaturizerConfig

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
RESULTS = HERE / "results"
SHIPPED = PREDICTOR_DIR / "predictor.onnx"
DIFFICULTY_KEYS = HERE / "data" / "difficulty_questions.sha256.gz"
ARCHS = ("hashed-ridge", "hashed-mlp", "task-linear", "task-ridge", "task-ridge-nodiff", "task-linear-cal",
         "task-ridge-cal")
CAL = "-cal"  # an architecture with this suffix is its base, calibrated per task (`calibrate`)
CAL_FOLDS = 4  # the held-out predictions a calibration is fitted on
CAL_MIN_PROMPTS = 20  # a task type with fewer training prompts keeps its raw predictions
BASELINES = ("task-mean", "length-only")
SEED = 0
DEV_SALT = "qroute-predictor-dev-v1"
DEV_PARTS = 4  # routing value: each quarter routed by a model fitted on the other three
# The shares of a task's per-prompt quality spread the router may be shown (1: as predicted, 0:
# the task's mean for every prompt), one chosen per task type by routing value (`routing_keep`).
KEEP_GRID = (1.0, 0.75, 0.5, 0.25, 0.0)
# Shares whose hypervolume ratio is this close to the best one's are tied; the tie goes to the
# larger share (the predictions as fitted), so a share is not chosen for a difference of noise.
KEEP_TIE = 0.01
# Dense features that get a slope per task (with the difficulty scores): prompt length and
# how many numbers it carries are the two shape signals that differ most within a task.
TERM_COLUMNS = ("log_tokens", "numbers")
RIDGE_ALPHA = 1.0  # hashed-ridge, as before
TASK_ALPHA = 30.0  # task archs, on standardised columns (set by hand on the routing simulation)
# A task with fewer training prompts is not claimed in the file's `tasks`: the router then
# assumes its answers run to max_tokens until a few are logged, instead of trusting a length
# learned from a handful of rows.
MIN_TASK_PROMPTS = 20
HASHED_WEIGHT = 1.6  # task-ridge: n-gram columns scaled so their penalty is about hashed-ridge's (30 / 1.6^2)


def dev_part(prompt: str) -> int:
    """Which of the DEV_PARTS fixed-hash parts a training prompt is in (by its question key)."""
    digest = hashlib.sha256((DEV_SALT + splits.question_key(prompt)).encode()).hexdigest()
    return int(digest[:8], 16) % DEV_PARTS


@dataclass
class Table:
    """One row per prompt; columns per verifier / acceptance key. NaN = not measured."""

    prompts: list[str]
    datasets: np.ndarray
    ids: list[str]
    verifiers: list[str]
    acc_keys: list[str]
    quality: np.ndarray  # (n, V)
    acceptance: np.ndarray  # (n, A)
    length: np.ndarray  # (n, V) output tokens as generated
    n_rows: int = 0
    texts: list[list[str]] = field(default_factory=list)  # [prompt][verifier]
    prompt_tokens: np.ndarray | None = None  # (n, V)
    censored: np.ndarray | None = None  # (n, V) bool: cut at a cap below today's
    length_now: np.ndarray | None = None  # (n, V) length at today's cap (censored rows imputed)

    def targets(self, acc_fill: np.ndarray) -> np.ndarray:
        acc = np.where(np.isnan(self.acceptance), acc_fill[None, :], self.acceptance)
        length = self.length if self.length_now is None else self.length_now
        return np.concatenate([self.quality, acc, np.log1p(length)], axis=1).astype(np.float64)

    def subset(self, idx: np.ndarray) -> "Table":
        pick = lambda a: None if a is None else a[idx]  # noqa: E731
        return Table([self.prompts[i] for i in idx], self.datasets[idx], [self.ids[i] for i in idx], self.verifiers,
                     self.acc_keys, self.quality[idx], self.acceptance[idx], self.length[idx],
                     len(idx) * len(self.verifiers), [self.texts[i] for i in idx] if self.texts else [],
                     pick(self.prompt_tokens), pick(self.censored), pick(self.length_now))


def load_table(path: Path, verifiers: list[str] | None = None, phrasing: str = "bench",
               acc_keys: list[str] | None = None) -> Table:
    """Rows of one phrasing (datagen.PHRASINGS) -> Table, keeping prompts answered by every
    verifier; censored lengths imputed. A user-phrased answer cut at its cap is never censored:
    that cap is the one `qroute run` gives, so the cut length is the length a user sees."""
    rows = [r for r in datagen.read_rows(path) if r.get("phrasing", "bench") == phrasing]
    verifiers = verifiers or sorted({r["model"] for r in rows})
    acc_keys = acc_keys or sorted({k for r in rows for k in r.get("acceptance", {}) if r["model"] in verifiers})
    by_prompt: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["model"] in verifiers:
            by_prompt.setdefault((r["dataset"], r["id"]), {})[r["model"]] = r
    keep = [(k, v) for k, v in sorted(by_prompt.items()) if all(m in v for m in verifiers)]
    n, nv, na = len(keep), len(verifiers), len(acc_keys)
    q, ln, ptok = np.zeros((n, nv)), np.zeros((n, nv)), np.zeros((n, nv))
    cens = np.zeros((n, nv), bool)
    acc = np.full((n, na), np.nan)
    texts = []
    for i, ((dataset, _), per_model) in enumerate(keep):
        texts.append([per_model[m].get("text", "") for m in verifiers])
        for j, m in enumerate(verifiers):
            r = per_model[m]
            q[i, j] = r["scores"]["quality"]
            ln[i, j] = r["output_tokens"]
            ptok[i, j] = r.get("prompt_tokens") or 0
            cap_then = r.get("max_tokens") or TASKS[dataset].max_tokens
            cens[i, j] = (phrasing == "bench" and r.get("finish_reason") == "length"
                          and cap_then < TASKS[dataset].max_tokens)
            for a, key in enumerate(acc_keys):
                val = r.get("acceptance", {}).get(key)
                if val is not None:
                    acc[i, a] = val
    prompts = [next(iter(v.values()))["prompt"] for _, v in keep]
    t = Table(prompts, np.array([k[0] for k, _ in keep]), [k[1] for k, _ in keep], verifiers, acc_keys,
              q, acc, ln, sum(len(v) for _, v in keep), texts, ptok, cens)
    t.length_now = impute_censored(t)
    return t


def only_prompts(t: Table, keys: set[str]) -> Table:
    """The rows of `t` whose "dataset:id" is in `keys`, in their order."""
    return t.subset(np.array([i for i, (d, k) in enumerate(zip(t.datasets, t.ids)) if f"{d}:{k}" in keys], dtype=int))


def table_of(results: dict, path: Path) -> Table:
    """The rows of `path` a training run read, by its results file (cv.json): the data file may
    have grown since. A results file from before the keys were kept gets every row."""
    t = load_table(path, results["data"]["verifiers"])
    return only_prompts(t, set(results["data"]["keys"])) if "keys" in results["data"] else t


def impute_censored(t: Table) -> np.ndarray:
    """Lengths at today's caps: a censored row's length is E[log1p L | L > its cap] under a normal
    fit of log1p(length) per (data set, verifier) that counts censored rows as 'above the cap'
    (Tobit), capped at today's cap. Uncensored rows keep their length."""
    from scipy.optimize import minimize
    from scipy.stats import norm

    out = t.length.astype(float).copy()
    for d in sorted(set(t.datasets)):
        cap = TASKS[d].max_tokens
        for j in range(len(t.verifiers)):
            rows = np.flatnonzero(t.datasets == d)
            c = t.censored[rows, j]
            if not c.any():
                continue
            y = np.log1p(t.length[rows, j])

            def nll(p):
                mu, s = p[0], math.exp(p[1])
                return -(norm.logpdf(y[~c], mu, s).sum() + norm.logsf(y[c], mu, s).sum())

            start = [float(y.mean()), math.log(float(y.std()) + 0.1)]
            mu, s = minimize(nll, start, method="Nelder-Mead").x
            s = math.exp(s)
            a = (y[c] - mu) / s
            expect = mu + s * norm.pdf(a) / np.maximum(norm.sf(a), 1e-12)
            out[rows[c], j] = np.minimum(np.expm1(np.maximum(expect, y[c])), cap)
    return out


# --------------------------------------------------------------------------- model fitting

@dataclass
class Fitted:
    """A fitted architecture: the heads the graph is built from, and how to read a table with them."""

    name: str
    heads: export.Heads
    uses_scores: bool  # whether the heads' task terms read the difficulty scores

    def raw(self, x: np.ndarray, scores: np.ndarray | None) -> np.ndarray:
        return self.heads.raw(x, scores if self.heads.terms is not None else None)


def _scaled_ridge(u: np.ndarray, y: np.ndarray, alpha: float, scale: np.ndarray,
                  weight: np.ndarray | None = None) -> export.Dense:
    """Ridge on u * scale (per-column weights of the penalty), folded back to weights on u;
    `weight`: per row (None: all alike)."""
    from sklearn.linear_model import Ridge

    m = Ridge(alpha=alpha).fit(u * scale[None, :], y, sample_weight=weight)
    return export.Dense((m.coef_.T * scale[:, None]).astype(np.float32), m.intercept_.astype(np.float32))


def fit_mlp(x: np.ndarray, y: np.ndarray, hidden: int, alpha: float) -> list[export.Dense]:
    """One hidden ReLU layer on standardised targets; the scaling is folded into the last layer."""
    from sklearn.neural_network import MLPRegressor

    mu, sd = y.mean(0), y.std(0) + 1e-6
    m = MLPRegressor(hidden_layer_sizes=(hidden,), alpha=alpha, learning_rate_init=1e-3, max_iter=600,
                     random_state=SEED, tol=1e-5, n_iter_no_change=30)
    m.fit(x, (y - mu) / sd)
    w1, w2 = m.coefs_
    b1, b2 = m.intercepts_
    return [
        export.Dense(w1.astype(np.float32), b1.astype(np.float32), "relu"),
        export.Dense((w2 * sd[None, :]).astype(np.float32), (b2 * sd + mu).astype(np.float32)),
    ]


def task_terms(feat: Featurizer, diff: export.Dense | None) -> export.TaskTerms:
    """Every task x TERM_COLUMNS, and each difficulty score for its own task only (GSM8K steps
    for math, EVOUNA for qa: read on other prompts they are off their data); without models,
    zero scores."""
    n_models = len(difficulty.NAMES)
    if diff is None:
        diff = export.Dense(np.zeros((feat.n_features, n_models), np.float32), np.zeros(n_models, np.float32))
    cols = tuple(feat.dense_start + DENSE_NAMES.index(c) for c in TERM_COLUMNS)
    tasks = tuple(range(feat.task_start, feat.task_start + len(TASK_TYPES)))
    mask = np.zeros((len(TASK_TYPES), len(cols) + n_models), np.float32)
    mask[:, :len(cols)] = 1.0
    for k, name in enumerate(difficulty.NAMES):
        mask[TASK_TYPES.index(difficulty.TASK_TYPE[name]), len(cols) + k] = 1.0
    return export.TaskTerms(diff, cols, tasks, mask)


def base_arch(arch: str) -> str:
    """The architecture a calibrated one calibrates (itself otherwise): within a task the
    calibration keeps or ties its ranking, never reverses it, so rankings and lengths are the base's."""
    return arch[:-len(CAL)] if arch.endswith(CAL) else arch


def task_columns(feat: Featurizer) -> tuple[int, ...]:
    """The task-type one-hot columns of the features, in TASK_TYPES order."""
    return tuple(range(feat.task_start, feat.task_start + len(TASK_TYPES)))


def task_group(feat: Featurizer, x: np.ndarray) -> np.ndarray:
    """Each prompt's task type, as an index into TASK_TYPES (every prompt has one)."""
    return np.argmax(x[:, list(task_columns(feat))], axis=1)


def calibrate(arch: str, feat: Featurizer, x: np.ndarray, scores: np.ndarray | None, y: np.ndarray, nv: int,
              na: int, diff: export.Dense | None) -> export.Calibration:
    """Per task type and verifier, quality ~ offset + scale * prediction, fitted on `arch`'s
    predictions of these rows held out by CAL_FOLDS-fold cross-fitting (folds stratified by task
    type): scale is the regression slope clipped to [0, 1], offset keeps the task's mean. A
    slope near 0 says the predictions do not rank that task's prompts for that verifier."""
    tcols = task_columns(feat)
    group = task_group(feat, x)
    fold = np.zeros(len(x), int)
    rng = np.random.default_rng(SEED)
    for g in np.unique(group):
        idx = np.flatnonzero(group == g)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % CAL_FOLDS
    take = lambda m: None if scores is None else scores[m]  # noqa: E731
    held = np.zeros((len(x), nv))
    for k in range(CAL_FOLDS):
        tr, te = fold != k, fold == k
        held[te] = fit_arch(arch, feat, x[tr], take(tr), y[tr], nv, na, diff).raw(x[te], take(te))[:, :nv]
    scale, offset = np.ones((len(tcols), nv)), np.zeros((len(tcols), nv))
    for g in range(len(tcols)):
        rows = group == g
        if rows.sum() < CAL_MIN_PROMPTS:
            continue
        for j in range(nv):
            p, q = held[rows, j], y[rows, j]
            var = p.var()
            slope = float(np.mean((p - p.mean()) * (q - q.mean())) / var) if var > 1e-12 else 0.0
            scale[g, j] = min(max(slope, 0.0), 1.0)
            offset[g, j] = q.mean() - scale[g, j] * p.mean()
    return export.Calibration(tcols, scale.astype(np.float32), offset.astype(np.float32))


def fit_arch(arch: str, feat: Featurizer, x: np.ndarray, scores: np.ndarray | None, y: np.ndarray, nv: int, na: int,
             diff: export.Dense | None, weight: np.ndarray | None = None) -> Fitted:
    """Fit one architecture or baseline on features x (n, n_features), cross-fitted difficulty
    `scores` (n, K) and targets y; `diff` is the difficulty layer the exported graph computes;
    `weight` per row for the linear fits (the MLP ignores it, and a calibration fits unweighted)."""
    if arch.endswith(CAL):
        f = fit_arch(base_arch(arch), feat, x, scores, y, nv, na, diff, weight)
        f.heads.calibration = calibrate(base_arch(arch), feat, x, scores, y, nv, na, diff)
        return Fitted(arch, f.heads, f.uses_scores)
    n_buckets = feat.config.n_buckets
    if arch == "hashed-ridge":
        scale = np.ones(x.shape[1])
        return Fitted(arch, export.Heads([_scaled_ridge(x, y, RIDGE_ALPHA, scale, weight)], nv, na), False)
    if arch == "hashed-mlp":
        return Fitted(arch, export.Heads(fit_mlp(x, y, hidden=32, alpha=1.0), nv, na), False)
    if arch == "length-only":
        # A linear fit on the log_tokens column alone (every other weight zero), so the bench
        # can route with it like any predictor file.
        scale = np.zeros(x.shape[1])
        scale[feat.dense_start] = 1.0
        return Fitted(arch, export.Heads([_scaled_ridge(x, y, 1e-6, scale, weight)], nv, na), False)
    if arch == "task-mean":
        scale = np.zeros(x.shape[1])
        scale[feat.task_start:feat.task_start + len(TASK_TYPES)] = 1.0
        return Fitted(arch, export.Heads([_scaled_ridge(x, y, 1e-3, scale, weight)], nv, na), False)
    with_diff = arch in ("task-linear", "task-ridge") and scores is not None and diff is not None
    terms = task_terms(feat, diff if with_diff else None)
    s = scores if with_diff else np.zeros((len(x), len(difficulty.NAMES)))
    u = terms.expand(x, s)
    sd = u.std(0)
    scale = np.where(sd > 1e-9, 1.0 / np.maximum(sd, 1e-9), 0.0)
    scale[:n_buckets] = HASHED_WEIGHT if arch in ("task-ridge", "task-ridge-nodiff") else 0.0
    heads = export.Heads([_scaled_ridge(u, y, TASK_ALPHA, scale, weight)], nv, na, terms=terms)
    return Fitted(arch, heads, with_diff)


def _outputs_from_raw(raw: np.ndarray, nv: int, na: int) -> dict[str, np.ndarray]:
    return {
        "quality": np.clip(raw[:, :nv], 0, 1),
        "acceptance": np.clip(raw[:, nv: nv + na], 0, 1),
        "length": np.maximum(np.expm1(raw[:, nv + na:]), 1.0),
    }


def _acc_fill(t: Table, idx: np.ndarray) -> np.ndarray:
    return np.nan_to_num(np.nanmean(t.acceptance[idx], axis=0), nan=0.5) if len(idx) else np.full(len(t.acc_keys), 0.5)


def fit_predict(arch: str, feat: Featurizer, t: Table, x: np.ndarray, scores: np.ndarray | None,
                tr: np.ndarray, te: np.ndarray, diff: export.Dense | None) -> dict[str, np.ndarray]:
    """Fit on rows `tr`, predict rows `te` (their cross-fitted difficulty scores)."""
    import warnings

    nv, na = len(t.verifiers), len(t.acc_keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN acceptance columns in a small fold
        y = t.targets(_acc_fill(t, tr))
    f = fit_arch(arch, feat, x[tr], None if scores is None else scores[tr], y[tr], nv, na, diff)
    return _outputs_from_raw(f.raw(x[te], None if scores is None else scores[te]), nv, na)


# --------------------------------------------------------------------------- evaluation

def _spearman(p: np.ndarray, y: np.ndarray) -> float | None:
    from scipy.stats import spearmanr

    if len(p) < 3 or np.ptp(p) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(p, y)[0])


def _auc(p: np.ndarray, y: np.ndarray) -> float | None:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return None
    return float(roc_auc_score(y, p))


def _binary(t: Table, d: str, q: np.ndarray) -> np.ndarray:
    """Correct/incorrect for AUC: the task's line for a correct answer (gsm8k: EM, nq:
    quality >= 0.5, code: pass), else above the data set's median quality (wp)."""
    line = TASKS[d].correct_at
    if line is not None:
        return (q >= line).astype(float)
    return (q > np.median(t.quality[t.datasets == d])).astype(float)


def _rank_rows(a: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(a, axis=1)  # average ranks: ties (binary labels, flat predictions) count half


def bootstrap_interval(p: np.ndarray, y: np.ndarray, metric: str, resamples: int = 1000,
                       seed: int = SEED) -> list[float] | None:
    """2.5th-97.5th percentile of Spearman ('spearman') or AUC ('auc', y binary) over prompts
    resampled with replacement; resamples where the metric is undefined are dropped."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(p), (resamples, len(p)))
    rp, yy = _rank_rows(p[idx]), y[idx]
    if metric == "auc":
        pos = yy > 0.5
        n1, n0 = pos.sum(1), (~pos).sum(1)
        ok = (n1 > 0) & (n0 > 0)
        vals = ((rp * pos).sum(1) - n1 * (n1 + 1) / 2) / np.maximum(n1 * n0, 1)
    else:
        ry = _rank_rows(yy)
        rp, ry = rp - rp.mean(1, keepdims=True), ry - ry.mean(1, keepdims=True)
        den = np.sqrt((rp ** 2).sum(1) * (ry ** 2).sum(1))
        ok = den > 0
        vals = (rp * ry).sum(1) / np.where(ok, den, 1.0)
    vals = vals[ok]
    if len(vals) < resamples // 2:
        return None
    return [float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))]


def evaluate(t: Table, pred: dict[str, np.ndarray], constant_within: bool = False, intervals: bool = True) -> dict:
    """Held-out figures per data set (and 'all') and per verifier, with bootstrap intervals
    within each data set. constant_within: one value per data set (task-mean): within-set ρ and
    AUC are undefined there."""
    out: dict = {}
    groups = {d: np.where(t.datasets == d)[0] for d in sorted(set(t.datasets))}
    groups["all"] = np.arange(len(t.prompts))
    for g, idx in groups.items():
        if len(idx) == 0:
            continue
        res: dict = {"n": int(len(idx)), "quality": {}, "acceptance": {}, "length": {}}
        for j, v in enumerate(t.verifiers):
            p, y = pred["quality"][idx, j], t.quality[idx, j]
            undefined = constant_within and g != "all"
            row = {"spearman": None if undefined else _spearman(p, y), "auc": None,
                   "mae": float(np.mean(np.abs(p - y))), "actual_mean": float(y.mean())}
            if g != "all" and not undefined:
                yb = _binary(t, g, y)
                row["auc"] = _auc(p, yb)
                if intervals:
                    row["spearman_ci"] = bootstrap_interval(p, y, "spearman") if row["spearman"] is not None else None
                    row["auc_ci"] = bootstrap_interval(p, yb, "auc") if row["auc"] is not None else None
            res["quality"][v] = row
            pl, yl = pred["length"][idx, j], t.length_now[idx, j]
            res["length"][v] = {
                "mae_tokens": float(np.mean(np.abs(pl - yl))),
                "median_rel_err": float(np.median(np.abs(pl - yl) / np.maximum(yl, 1))),
                "spearman": _spearman(pl, yl),
                "actual_mean": float(yl.mean()),
            }
        for a, key in enumerate(t.acc_keys):
            ok = ~np.isnan(t.acceptance[idx, a])
            if ok.any():
                p, y = pred["acceptance"][idx, a][ok], t.acceptance[idx, a][ok]
                res["acceptance"][key] = {"mae": float(np.mean(np.abs(p - y))), "spearman": _spearman(p, y),
                                          "actual_mean": float(y.mean()), "n": int(ok.sum())}
        # Choosing the better of two verifiers, over prompts where their actual quality differs.
        hits = total = 0.0
        for i in idx:
            for a in range(len(t.verifiers)):
                for b in range(a + 1, len(t.verifiers)):
                    dy = t.quality[i, a] - t.quality[i, b]
                    if abs(dy) < 1e-9:
                        continue
                    dp = pred["quality"][i, a] - pred["quality"][i, b]
                    hits += 0.5 if abs(dp) < 1e-12 else float(np.sign(dp) == np.sign(dy))
                    total += 1
        res["better_of_two"] = {"accuracy": hits / total if total else None, "pairs": int(total)}
        out[g] = res
    return out


def cross_validate(t: Table, feat: Featurizer, x: np.ndarray, scores: np.ndarray | None, diff, folds: int,
                   names: tuple[str, ...]) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold predictions of every architecture and baseline (folds stratified by data set)."""
    from sklearn.model_selection import StratifiedKFold

    nv, na = len(t.verifiers), len(t.acc_keys)
    oof = {name: {"quality": np.zeros((len(t.prompts), nv)), "acceptance": np.zeros((len(t.prompts), na)),
                  "length": np.zeros((len(t.prompts), nv))} for name in names}
    skf = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    for tr, te in skf.split(t.prompts, t.datasets):
        for name in names:
            for k, v in fit_predict(name, feat, t, x, scores, tr, te, diff).items():
                oof[name][k][te] = v
    return oof


# --------------------------------------------------------------------------- diagnosis

def diagnose(t: Table, root: Path | None) -> dict:
    """Within-task skill of the simple signals next to the models, and the pooled-slope check:
    does a fit pooled across tasks give prompt length the opposite sign it has within a task?"""
    import json as _json

    from qroute_cli.jsonl import read_jsonl

    root = root or splits.data_root()
    signals: dict[str, dict[str, np.ndarray]] = {}
    words = np.array([len(p.split()) for p in t.prompts], float)
    for d in sorted(set(t.datasets)):
        idx = np.flatnonzero(t.datasets == d)
        signals.setdefault(d, {})["fewer question words"] = -words[idx]
    gsm = np.flatnonzero(t.datasets == "gsm8k")
    if gsm.size and (root / "gsm8k" / "train.jsonl").exists():
        answers = {f"train-{i}": r["answer"] for i, r in enumerate(read_jsonl(root / "gsm8k" / "train.jsonl"))}
        signals["gsm8k"]["fewer calculator steps (reference, training-only)"] = -np.array(
            [answers[t.ids[i]].count("<<") for i in gsm], float)
    nq = np.flatnonzero(t.datasets == "nq")
    evouna_file = root / "human_quality" / "evouna_nq.json"
    if nq.size and evouna_file.exists():
        by_q = {splits.normalize_question(r["question"]): r for r in _json.loads(evouna_file.read_text(encoding="utf-8"))}
        dev = {f"dev-{i}": r["question"] for i, r in enumerate(read_jsonl(root / "nq_open" / "NQ-open.dev.jsonl"))}
        counts = []
        for i in nq:
            r = by_q.get(splits.normalize_question(dev[t.ids[i]]))
            counts.append(np.nan if r is None else sum(bool(r.get(f"judge_{s}")) for s in difficulty.STRONG_SYSTEMS))
        counts = np.array(counts)
        signals["nq"]["strong systems judged right (EVOUNA, human)"] = np.where(np.isnan(counts), np.nanmean(counts), counts)
    out: dict = {"signals": {}, "slopes": {}}
    for d, sigs in signals.items():
        idx = np.flatnonzero(t.datasets == d)
        for name, s in sigs.items():
            out["signals"].setdefault(d, {})[name] = {
                v: {"spearman": _spearman(s, t.quality[idx, j]), "auc": _auc(s, _binary(t, d, t.quality[idx, j]))}
                for j, v in enumerate(t.verifiers)}
    # Slope of quality on log prompt length: pooled across tasks vs within each task.
    logl = np.log1p(words)
    for j, v in enumerate(t.verifiers):
        pooled = float(np.polyfit(logl, t.quality[:, j], 1)[0])
        within = {}
        for d in sorted(set(t.datasets)):
            idx = np.flatnonzero(t.datasets == d)
            within[d] = float(np.polyfit(logl[idx], t.quality[idx, j], 1)[0]) if np.ptp(logl[idx]) > 0 else None
        out["slopes"][v] = {"pooled": pooled, "within": within}
    return out


# --------------------------------------------------------------------------- routing value

def sim_rows(t: Table, idx: np.ndarray, root: Path | None):
    """SimRows of prompts `idx` (their items carry the references the bench scores with)."""
    from predictor.routing_value import SimRow
    from qroute_cli.evaluation.tasks import Item

    refs = {}
    for d in sorted(set(t.datasets[idx])):
        for r in splits.train_rows(d, root):
            refs[(d, r.id)] = r
    rows = []
    for i in idx:
        src = refs[(t.datasets[i], t.ids[i])]
        item = Item(t.datasets[i], t.ids[i], src.question, src.reference)
        rows.append(SimRow(
            item,
            quality={v: float(t.quality[i, j]) for j, v in enumerate(t.verifiers)},
            text={v: t.texts[i][j] for j, v in enumerate(t.verifiers)},
            tokens={v: float(t.length_now[i, j]) for j, v in enumerate(t.verifiers)},
            prompt_tokens={v: int(t.prompt_tokens[i, j]) for j, v in enumerate(t.verifiers)},
            acceptance={k: (None if np.isnan(t.acceptance[i, a]) else float(t.acceptance[i, a]))
                        for a, k in enumerate(t.acc_keys)},
        ))
    return rows


def routing_selection(t: Table, feat: Featurizer, x: np.ndarray, scores, diff, names: tuple[str, ...],
                      profile_path: Path, root: Path | None) -> tuple[dict | None, "DevSim | None"]:
    """Routing value of every candidate: the training prompts fall into DEV_PARTS fixed-hash
    parts; each part is predicted by a fit on the other parts, and all prompts, each with its
    held-out prediction, are routed in the simulation (predictor/routing_value.py). Returns
    each candidate's static-frontier gain, and the simulation (for `routing_keep`); (None, None)
    when the rows cannot be simulated."""
    from predictor import routing_value as rv
    from qroute_cli.config import load_registry
    from qroute_cli.routing.latency import Profile
    from qroute_cli.routing.predict import trained_tasks
    from qroute_cli.routing.scoring import PriorScorer

    registry = rv.routing_registry(load_registry(None, include_user=False))
    if not set(t.verifiers) <= set(registry.models) or not profile_path.exists():
        return None, None
    profile = Profile.from_json(json.loads(profile_path.read_text(encoding="utf-8")))
    part = np.array([dev_part(p) for p in t.prompts])
    if min(np.bincount(part, minlength=DEV_PARTS)) < 4:
        return None, None
    every = np.arange(len(t.prompts))
    rows = sim_rows(t, every, root)
    m = rv.simulated_matrix(rows, registry, profile)
    items = [r.item for r in rows]
    counts = {d: int((t.datasets == d).sum()) for d in sorted(set(t.datasets))}
    tasks = trained_tasks({"tasks": [DATASET_TASKS.get(d, d) for d, n in counts.items() if n >= MIN_TASK_PROMPTS]})
    out = {"parts": DEV_PARTS, "prompts": counts, "profile": str(profile_path.name), "gains": {}}
    nv, na = len(t.verifiers), len(t.acc_keys)
    curves = {}
    sim = DevSim(t, m, items, registry, profile, tasks, {}, {})
    for name in names:
        pred = {"quality": np.zeros((len(every), nv)), "acceptance": np.zeros((len(every), na)),
                "length": np.zeros((len(every), nv))}
        for k in range(DEV_PARTS):
            tr, te = np.flatnonzero(part != k), np.flatnonzero(part == k)
            for key, v in fit_predict(name, feat, t, x, scores, tr, te, diff).items():
                pred[key][te] = v
        curves[name] = sim.route(name, pred)
        sim.preds[name], sim.curves[name] = pred, curves[name]
        out["gains"][name] = rv.summary(curves[name], items)
        print(f"  routing value {name}: static-frontier gain {out['gains'][name]['all']['gain_abs']:+.4f}", flush=True)
    curves["prior"] = rv.route(m, items, registry, profile, PriorScorer(registry))
    out["gains"]["prior"] = rv.summary(curves["prior"], items)
    best = max((a for a in ARCHS if a in out["gains"]), key=lambda a: out["gains"][a]["all"]["gain_abs"] or -1.0)
    out["best"] = best
    # How far each candidate is from the best, with the noise of a few hundred prompts.
    out["vs_best"] = {name: rv.paired_interval(curves[name], curves[best], items) for name in curves if name != best}
    return out, sim


@dataclass
class DevSim:
    """The dev-split routing simulation of `routing_selection`, kept for `routing_keep`."""

    table: Table
    matrix: object  # qroute_cli.evaluation.matrix.Matrix
    items: list
    registry: object
    profile: object
    tasks: frozenset[str] | None
    preds: dict[str, dict[str, np.ndarray]]  # per candidate: its held-out predictions of every prompt
    curves: dict[str, object]  # per candidate: routing_value.Curves

    def route(self, name: str, pred: dict[str, np.ndarray]):
        """QualityRoute's budget sweep over the simulated matrix with predictions `pred` of
        every prompt of the table (routing_value.Curves)."""
        from predictor import routing_value as rv

        t = self.table
        scorer = rv.TableScorer(name, self.registry, t.prompts, pred, t.verifiers, t.acc_keys, self.tasks)
        return rv.route(self.matrix, self.items, self.registry, self.profile, scorer)


def keep_spread(q: np.ndarray, group: np.ndarray, keep: dict[int, float]) -> np.ndarray:
    """Quality predictions `q` (prompts, verifiers) with each task group's spread around the
    group's mean (per verifier) scaled by keep[group]; groups not in `keep` are left alone."""
    out = q.copy()
    for g, k in keep.items():
        rows = group == g
        if rows.any() and k != 1.0:
            mu = q[rows].mean(axis=0)
            out[rows] = mu + k * (q[rows] - mu)
    return out


def choose_share(hypervolume: dict[float, float]) -> float:
    """The largest share kept whose hypervolume ratio is within KEEP_TIE of the best."""
    best = max(hypervolume.values())
    return max(k for k, hv in hypervolume.items() if hv >= best - KEEP_TIE)


def routing_keep(t: Table, feat: Featurizer, x: np.ndarray, sim: DevSim, arch: str) -> dict:
    """How much of `arch`'s per-prompt quality spread each task type keeps, chosen by routing
    value on the dev split: where the predictions cannot tell which verifier does better on
    which prompt of a task, their spread only sends prompts to a worse pair, and the task's
    mean routes better. Each KEEP_GRID share is routed (the same share for every task type);
    each task type takes the largest share whose hypervolume ratio against the static frontier
    on its data set (the bench's per-task figure) is within KEEP_TIE of the best share's. The
    chosen shares are routed together and compared with the full spread (paired 95% interval
    of the static-frontier gain)."""
    from predictor import routing_value as rv

    group = task_group(feat, x)
    pred = sim.preds[arch]
    task_of = {d: TASK_TYPES.index(DATASET_TASKS.get(d, d)) for d in sorted(set(t.datasets))
               if DATASET_TASKS.get(d, d) in TASK_TYPES}

    def curves_with(keep: dict[int, float]):
        q = keep_spread(pred["quality"], group, keep)
        return sim.route(arch, {**pred, "quality": q})

    by_share = {}
    for k in KEEP_GRID:
        c = sim.curves[arch] if k == 1.0 else curves_with({g: k for g in range(len(TASK_TYPES))})
        by_share[k] = rv.summary(c, sim.items)
    chosen = {}
    for d, g in task_of.items():
        chosen[TASK_TYPES[g]] = choose_share({k: by_share[k][d]["hypervolume_ratio"] or 0.0 for k in KEEP_GRID})
    keep = {TASK_TYPES.index(task): k for task, k in chosen.items()}
    together = curves_with(keep)
    out = {"grid": list(KEEP_GRID), "by_share": {str(k): v for k, v in by_share.items()}, "chosen": chosen,
           "with_chosen": rv.summary(together, sim.items),
           "vs_full_spread": rv.paired_interval(together, sim.curves[arch], sim.items)}
    print("  spread kept per task type: " + ", ".join(f"{task} {k:g}" for task, k in chosen.items())
          + f"; static-frontier gain {out['with_chosen']['all']['gain_abs']:+.4f} "
          f"(full spread {by_share[1.0]['all']['gain_abs']:+.4f})", flush=True)
    return out


def with_keep(heads: export.Heads, feat: Featurizer, x: np.ndarray, scores: np.ndarray | None,
              chosen: dict[str, float]) -> export.Heads:
    """`heads` with each task type's quality spread scaled by chosen[task] around that task's
    mean prediction on the training prompts `x`: a change of the calibration's scale and
    offset, so the graph is the same size."""
    from dataclasses import replace

    nv = heads.n_quality
    cols = task_columns(feat)
    cal = heads.calibration or export.Calibration(cols, np.ones((len(cols), nv), np.float32),
                                                  np.zeros((len(cols), nv), np.float32))
    q = heads.raw(x, scores if heads.terms is not None else None)[:, :nv]  # calibrated, where heads are
    group = task_group(feat, x)
    scale, offset = cal.scale.copy(), cal.offset.copy()
    for task, k in chosen.items():
        g = TASK_TYPES.index(task)
        if k == 1.0 or not (group == g).any():
            continue
        mu = q[group == g].mean(axis=0)
        scale[g] = k * scale[g]
        offset[g] = k * offset[g] + (1.0 - k) * mu
    return replace(heads, calibration=export.Calibration(cols, scale.astype(np.float32), offset.astype(np.float32)))


def choose(selection: dict | None, results: dict) -> str:
    """The architecture to ship: the best routing value; candidates whose gap to it is within
    its 95% interval (not distinguishable on these prompts) are tied, and the tie goes to the
    better mean within-task skill (AUC where defined, else Spearman, held out)."""
    def skill(a: str) -> float:
        vals = [(v["auc"] if v["auc"] is not None else v["spearman"]) for d, r in results[a].items() if d != "all"
                for v in r["quality"].values() if (v["auc"] if v["auc"] is not None else v["spearman"]) is not None]
        return float(np.mean(vals)) if vals else -1.0

    if selection is None:
        return max(ARCHS, key=skill)
    best = selection["best"]
    tied = [best] + [a for a in ARCHS if a != best and (ci := selection["vs_best"].get(a)) is not None and ci[1] >= 0]
    return max(tied, key=skill)


# --------------------------------------------------------------------------- learning curve

def learning_curve(t: Table, feat: Featurizer, x: np.ndarray, scores, diff, arch: str,
                   repeats: int = 20) -> dict:
    """Within-task skill of `arch` against training prompts per task: for each size, `repeats`
    random draws of that many prompts per task to fit on, scored on the task's other prompts."""
    rng = np.random.default_rng(SEED)
    per_task = {d: np.flatnonzero(t.datasets == d) for d in sorted(set(t.datasets))}
    sizes = [s for s in (10, 20, 30, 40, 60, 80, 120, 160, 240, 360, 480) if s <= max(len(v) for v in per_task.values()) - 10]
    targets = {  # what the targets name: 1.5B correct on GSM8K (AUROC), NQ / code quality (rho)
        "gsm8k": ("qwen2.5-coder-1.5b", "auc"), "nq": ("qwen2.5-coder-1.5b", "spearman"),
        "code": ("qwen2.5-coder-1.5b", "spearman"), "wp": ("qwen2.5-coder-1.5b", "spearman")}
    out = {"arch": arch, "repeats": repeats, "sizes": sizes, "curves": {}}
    for d, (v, metric) in targets.items():
        if d in per_task and v in t.verifiers:
            out["curves"][d] = {"verifier": v, "metric": metric, "points": []}
    for size in sizes:
        # Tasks with at least size + 10 prompts are drawn down to `size` and scored on the rest;
        # smaller ones train on all their prompts and are not scored at this size.
        scored = [d for d, ix in per_task.items() if len(ix) >= size + 10]
        vals: dict[str, list[float]] = {d: [] for d in out["curves"] if d in scored}
        for _ in range(repeats):
            tr = np.concatenate([rng.choice(ix, size, replace=False) if d in scored else ix for d, ix in per_task.items()])
            te = np.setdiff1d(np.arange(len(t.prompts)), tr)
            pred = fit_predict(arch, feat, t, x, scores, tr, te, diff)
            for d in vals:
                c = out["curves"][d]
                j = t.verifiers.index(c["verifier"])
                sel = t.datasets[te] == d
                p, y = pred["quality"][sel, j], t.quality[te][sel, j]
                v = _auc(p, _binary(t, d, y)) if c["metric"] == "auc" else _spearman(p, y)
                if v is not None:
                    vals[d].append(v)
        for d, got in vals.items():
            if got:
                out["curves"][d]["points"].append({
                    "per_task": size, "mean": float(np.mean(got)), "draws": len(got),
                    "p2.5": float(np.percentile(got, 2.5)), "p97.5": float(np.percentile(got, 97.5))})
    return out


# --------------------------------------------------------------------------- human-label checks

def evouna_metric_check(root: Path | None = None) -> dict:
    """How well our automatic NQ scores (normalised EM, token F1) agree with EVOUNA's human labels."""
    from sklearn.metrics import roc_auc_score

    from qroute_cli.evaluation import metrics

    root = root or splits.data_root()
    f1s, ems, labels = [], [], []
    for r in json.loads((root / "human_quality" / "evouna_nq.json").read_text()):
        if r.get("improper") is True or splits.nq_side(r["question"]) != "train":
            continue
        gold = [g.strip() for g in r["golden_answer"].split("/") if g.strip()]
        for sys_name in ("fid", "gpt35", "chatgpt", "gpt4", "newbing"):
            ans, judge = r.get(f"answer_{sys_name}"), r.get(f"judge_{sys_name}")
            if isinstance(judge, bool) and isinstance(ans, str):
                f1s.append(max(metrics.token_f1(ans, g) for g in gold))
                ems.append(float(any(metrics.normalize_answer(ans) == metrics.normalize_answer(g) for g in gold)))
                contained = metrics.nq_contains(ans, gold) if "\n" not in ans.strip() else float(
                    any(f" {metrics.normalize_answer(g)} " in f" {metrics.normalize_answer(ans)} " for g in gold))
                labels.append((judge, contained))
    y = np.array([j for j, _ in labels], float)
    contains = np.array([c for _, c in labels], float)
    f1 = np.array(f1s)
    ours = np.maximum(f1, contains)  # the NQ quality the predictor learns (metrics.nq_scores)
    return {
        "auc_quality": float(roc_auc_score(y, ours)),
        "acc_quality_ge_0.5": float(np.mean((ours >= 0.5) == (y == 1))),
        "answers": len(y),
        "human_correct_rate": float(y.mean()),
        "auc_f1": float(roc_auc_score(y, f1)),
        "acc_f1_ge_0.5": float(np.mean((f1 >= 0.5) == (y == 1))),
        "acc_em": float(np.mean(np.array(ems) == y)),
        "acc_contains": float(np.mean(contains == y)),
    }


def hanna_check(root: Path | None = None) -> dict:
    """What HANNA's human ratings of 96 human stories say about our cheap story signals."""
    from scipy.stats import spearmanr

    from qroute_cli.evaluation import metrics

    root = root or splits.data_root()
    rows = [json.loads(line) for line in (root / "human_quality" / "hanna_human_stories_ratings.jsonl").open()]
    words = np.array([len(r["story"].split()) for r in rows], float)
    overlap = np.array([metrics.rouge_l(r["story"], r["prompt"]) for r in rows])
    out = {"stories": len(rows)}
    for crit in ("relevance", "coherence", "engagement", "complexity"):
        ratings = np.array([r[f"{crit}_mean"] for r in rows])
        out[f"spearman_length_vs_{crit}"] = float(spearmanr(words, ratings)[0])
        out[f"spearman_rougeL_prompt_vs_{crit}"] = float(spearmanr(overlap, ratings)[0])
    return out


# --------------------------------------------------------------------------- user phrasing

def question_part(dataset: str, id: str) -> int:
    """The DEV_PARTS part of a question whatever its phrasing (a user-phrased prompt and the
    bench's prompt for the same question always fall in the same part)."""
    digest = hashlib.sha256(f"{DEV_SALT}:{dataset}:{id}".encode()).hexdigest()
    return int(digest[:8], 16) % DEV_PARTS


def _stack(a: np.ndarray | None, b: np.ndarray | None) -> np.ndarray | None:
    return None if a is None or b is None else np.concatenate([a, b], axis=0)


def phrasing_weights(bench_datasets: np.ndarray, user_datasets: np.ndarray) -> np.ndarray:
    """Row weights for a fit on bench rows followed by user rows: within each task both
    phrasings weigh alike in all (a task has far fewer user rows; a user's prompt is as likely
    as the bench's)."""
    w_user = np.array([(bench_datasets == d).sum() / max((user_datasets == d).sum(), 1) for d in user_datasets])
    return np.concatenate([np.ones(len(bench_datasets)), np.maximum(w_user, 1.0)])


def fit_lengths_with_user(f: Fitted, arch: str, feat: Featurizer, x, scores, y, xu, su, yu, nv: int, na: int,
                          diff, weight: np.ndarray | None = None) -> Fitted:
    """`f` (fitted on bench-phrased rows) with its length head refitted on those rows and the
    user-phrased ones; its quality and acceptance heads stay as they were (and as they were
    judged). Only single-layer fits can swap one head; others are returned as they are."""
    if len(f.heads.layers) != 1 or xu is None or not len(xu):
        return f
    g = fit_arch(base_arch(arch), feat, np.concatenate([x, xu]), _stack(scores, su), np.concatenate([y, yu]), nv, na,
                 diff, weight)
    mine, theirs = f.heads.layers[0], g.heads.layers[0]
    mine.w[:, nv + na:] = theirs.w[:, nv + na:]
    mine.b[nv + na:] = theirs.b[nv + na:]
    return f


def user_length_check(t: Table, u: Table, feat: Featurizer, x, scores, xu, su, diff, arch: str) -> dict:
    """Answer length held out on user-phrased prompts, by the length head fitted on bench rows
    alone and on bench + user rows; every question is predicted by fits that saw neither of its
    phrasings. The same for the bench-phrased prompts, to show what the user rows cost there.
    Per data set and verifier: median observed/predicted and mean |log(observed/predicted)|,
    predictions capped at the row's cap as the router caps them."""
    nv, na = len(t.verifiers), len(t.acc_keys)
    pt = np.array([question_part(d, i) for d, i in zip(t.datasets, t.ids)])
    pu = np.array([question_part(d, i) for d, i in zip(u.datasets, u.ids)])
    yt = t.targets(_acc_fill(t, np.arange(len(t.prompts))))
    yu = u.targets(_acc_fill(t, np.arange(len(t.prompts))))
    length_of = lambda f, xx, ss: _outputs_from_raw(f.raw(xx, ss), nv, na)["length"]  # noqa: E731
    take = lambda a, m: None if a is None else a[m]  # noqa: E731
    pred = {(who, on): np.zeros((len(tab.prompts), nv)) for who in ("bench", "both") for on, tab in (("user", u), ("bench", t))}
    for k in range(DEV_PARTS):
        tr_t, tr_u, te_t, te_u = pt != k, pu != k, pt == k, pu == k
        alone = fit_arch(arch, feat, x[tr_t], take(scores, tr_t), yt[tr_t], nv, na, diff)
        both = fit_arch(arch, feat, np.concatenate([x[tr_t], xu[tr_u]]), _stack(take(scores, tr_t), take(su, tr_u)),
                        np.concatenate([yt[tr_t], yu[tr_u]]), nv, na, diff,
                        phrasing_weights(t.datasets[tr_t], u.datasets[tr_u]))
        for who, f in (("bench", alone), ("both", both)):
            if te_u.any():
                pred[(who, "user")][te_u] = length_of(f, xu[te_u], take(su, te_u))
            if te_t.any():
                pred[(who, "bench")][te_t] = length_of(f, x[te_t], take(scores, te_t))
    user_cap = datagen_cap_user()
    caps_u = np.full((len(u.prompts), nv), float(user_cap))
    caps_t = np.array([[TASKS[d].max_tokens] * nv for d in t.datasets], float)
    out: dict = {"arch": arch, "parts": DEV_PARTS, "user_prompts": {d: int((u.datasets == d).sum()) for d in sorted(set(u.datasets))},
                 "user_cap": user_cap, "on": {}}
    for on, tab, caps in (("user", u, caps_u), ("bench", t, caps_t)):
        for d in sorted(set(u.datasets)):
            rows = np.flatnonzero(tab.datasets == d)
            for j, v in enumerate(tab.verifiers):
                obs = np.maximum(tab.length[rows, j], 1.0)
                cell = {"observed_median": float(np.median(obs))}
                for who in ("bench", "both"):
                    p_ = np.minimum(pred[(who, on)][rows, j], caps[rows, j])
                    r = np.log(obs / np.maximum(p_, 1.0))
                    cell[who] = {"median_ratio": float(np.exp(np.median(r))), "mean_abs_log": float(np.mean(np.abs(r)))}
                out["on"].setdefault(on, {}).setdefault(d, {})[v] = cell
    return out


def datagen_cap_user() -> int:
    """The cap user-phrased rows were made at: `qroute run`'s default max_tokens."""
    from qroute_cli.config import load_registry

    return load_registry(None, include_user=False).defaults.max_tokens


# --------------------------------------------------------------------------- main

def _meta(arch: str, t: Table, cfg: FeaturizerConfig, commit: str, caps: dict[str, int], models,
          user: Table | None = None) -> dict:
    counts = {d: int((t.datasets == d).sum()) for d in sorted(set(t.datasets))}
    user_counts = {} if user is None else {d: int((user.datasets == d).sum()) for d in sorted(set(user.datasets))}
    meta = {
        "name": arch,
        "architecture": arch,
        "inputs": "hashed",
        "featurizer": cfg.to_json(),
        "tokenizer": TOKENIZER_FILE,
        "verifiers": t.verifiers,
        "acceptance_keys": t.acc_keys,
        "quality": "gsm8k exact match / nq max(token F1, gold answer contained) / writingprompts ROUGE-L / code pass@1, in [0, 1]",
        "length": "expected output tokens at today's caps (" + ", ".join(f"{d} {c}" for d, c in caps.items()) + ")"
                  + (", also from prompts phrased as users phrase them" if user_counts else ""),
        "trained_on": {"prompts": len(t.prompts), "rows": t.n_rows, "per_dataset": counts,
                       **({"user_phrased": user_counts} if user_counts else {})},
        "tasks": sorted(DATASET_TASKS.get(d, d) for d, n in counts.items() if n >= MIN_TASK_PROMPTS),
        "commit": commit,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if arch in ("task-linear", "task-ridge") and models:
        meta["difficulty"] = [{"name": m.name, "higher_is_harder": difficulty.HARDER[m.name] > 0, **m.facts} for m in models]
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m predictor.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=datagen.DEFAULT_OUT)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--ship", default="auto", help="architecture copied into the package ('auto': best routing on the dev split)")
    ap.add_argument("--no-encoder", action="store_true", help=argparse.SUPPRESS)  # MiniLM is no longer trained here
    ap.add_argument("--no-human", action="store_true", help="skip the difficulty models and the EVOUNA/HANNA checks")
    ap.add_argument("--profile", type=Path, default=None,
                    help="calibration profile for the routing simulation (default: bench/results/replay_profile.json)")
    ap.add_argument("--build-dir", type=Path, default=BUILD, help="where every architecture's .onnx goes")
    ap.add_argument("--ship-to", type=Path, default=SHIPPED, help="the packaged predictor file")
    ap.add_argument("--results", type=Path, default=RESULTS / "cv.json")
    ap.add_argument("--prompts-of", type=Path, default=None, metavar="RESULTS_JSON",
                    help="train only on the prompts an earlier run's results file lists (its data.keys), "
                         "e.g. to remake a shipped file after the data has grown")
    args = ap.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for the results file's provenance
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a busy 2-core machine, spinning BLAS threads make small products 100x slower.
    with threadpool_limits(1):
        return _train(args)


def _train(args) -> int:
    from predictor import routing_value

    t0 = time.time()
    table = load_table(args.data)
    keys = None
    if args.prompts_of is not None:
        keys = set(json.loads(args.prompts_of.read_text())["data"]["keys"])
        table = only_prompts(table, keys)
    if len(table.prompts) < 2 * args.folds:
        print(f"only {len(table.prompts)} complete prompts in {args.data}: generate more first", file=sys.stderr)
        return 1
    print(f"{len(table.prompts)} prompts x {len(table.verifiers)} verifiers ({table.n_rows} rows): "
          + ", ".join(f"{d}={int((table.datasets == d).sum())}" for d in sorted(set(table.datasets)))
          + f"; {int(table.censored.sum())} answers cut at an older cap (lengths imputed)", flush=True)
    cfg = FeaturizerConfig()
    feat = Featurizer(PREDICTOR_DIR / TOKENIZER_FILE, cfg)
    x = feat.hashed(table.prompts)
    models, scores, diff = [], None, None
    if not args.no_human:
        models, labels = difficulty.fit_all(feat)
        scores = difficulty.cross_fitted(models, x, table.prompts)
        diff = difficulty.stacked(models)
        difficulty.write_keys(labels, DIFFICULTY_KEYS)
        for m in models:
            print(f"difficulty {m.name}: {m.facts['questions']} questions, held-out Spearman {m.facts['cv_spearman']:.2f}")
    # User-phrased prompts (datagen --user) teach the exported length heads only.
    user = load_table(args.data, table.verifiers, phrasing="user", acc_keys=table.acc_keys)
    xu = su = None
    if user.prompts:
        xu = feat.hashed(user.prompts)
        bench_prompt = dict(zip(zip(table.datasets, table.ids), table.prompts))
        if models:  # each read by the difficulty models that never saw its question as the bench asks it
            su = difficulty.cross_fitted(models, xu, [bench_prompt.get(k, p) for k, p in
                                                      zip(zip(user.datasets, user.ids), user.prompts)])
        print(f"{len(user.prompts)} user-phrased prompts for the length heads: "
              + ", ".join(f"{d}={int((user.datasets == d).sum())}" for d in sorted(set(user.datasets))), flush=True)
    print(f"features ready in {time.time() - t0:.0f}s", flush=True)
    names = ARCHS + BASELINES

    selection = sim = None
    profile = args.profile or routing_value.DEFAULT_PROFILE
    if not args.no_human:
        selection, sim = routing_selection(table, feat, x, scores, diff, names, profile, None)
    oof = cross_validate(table, feat, x, scores, diff, args.folds, names)
    results = {name: evaluate(table, pred, constant_within=name == "task-mean") for name, pred in oof.items()}
    print(f"cross-validated in {time.time() - t0:.0f}s", flush=True)

    ship = choose(selection, results) if args.ship == "auto" else args.ship
    keep: dict[str, float] = {}
    if sim is not None and ship in sim.preds:
        selection["keep"] = routing_keep(table, feat, x, sim, ship)
        keep = {task: k for task, k in selection["keep"]["chosen"].items() if k != 1.0}

    facts: dict = {}
    if not args.no_human:
        facts["diagnosis"] = diagnose(table, None)
        facts["learning_curve"] = learning_curve(table, feat, x, scores, diff,
                                                 base_arch(ship) if ship in ARCHS else "task-ridge")
        for j, m in enumerate(models):  # cross-fitted scores against our verifiers' quality, within task
            d = "gsm8k" if m.name == "gsm8k-steps" else "nq"
            idx = np.flatnonzero(table.datasets == d)
            m.facts["vs_our_quality"] = {v: _spearman(-difficulty.HARDER[m.name] * scores[idx, j], table.quality[idx, k])
                                         for k, v in enumerate(table.verifiers)} if idx.size > 2 else {}
        print(f"diagnosis and learning curve in {time.time() - t0:.0f}s", flush=True)
    if user.prompts:
        facts["user_lengths"] = user_length_check(table, user, feat, x, scores, xu, su, diff,
                                                  base_arch(ship) if ship in ARCHS else "task-ridge")
        print(f"user-phrased length check in {time.time() - t0:.0f}s", flush=True)

    # Fit every architecture on all rows, export, check ONNX against numpy.
    commit = datagen.git_commit()
    nv, na = len(table.verifiers), len(table.acc_keys)
    y = table.targets(_acc_fill(table, np.arange(len(table.prompts))))
    exported = {}
    args.build_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PREDICTOR_DIR / TOKENIZER_FILE, args.build_dir / TOKENIZER_FILE)
    check_prompts = table.prompts[:8] + ["hi", "Write a Python function that reverses a linked list.",
                                         "Tom has 3 apples and buys 4 more. How many apples does he have?"]
    caps = {d: TASKS[d].max_tokens for d in sorted(set(table.datasets))}
    xc = feat.hashed(check_prompts)
    if user.prompts:  # the same for every architecture
        yu = user.targets(_acc_fill(table, np.arange(len(table.prompts))))
        weight = phrasing_weights(table.datasets, user.datasets)
    for arch in names:
        f = fit_arch(arch, feat, x, scores, y, nv, na, diff)
        if user.prompts:
            f = fit_lengths_with_user(f, arch, feat, x, scores, y, xu, su, yu, nv, na, diff, weight)
        if f.heads.terms is not None and not f.uses_scores:
            f.heads.terms = task_terms(feat, None)  # the graph must compute the zeros training saw
        model = export.build(f.heads, _meta(arch, table, cfg, commit, caps, models if f.uses_scores else [],
                                            user if len(f.heads.layers) == 1 else None),
                             n_features=feat.n_features)
        path = args.build_dir / f"{arch}.onnx"
        size = export.save(model, path)
        err = export.check(path, {"features": xc}, f.heads.outputs(xc), atol=1e-4)
        exported[arch] = {"path": path.name, "bytes": size, "max_abs_diff_vs_numpy": err}
        print(f"exported {arch}: {size / 1e6:.2f} MB, ONNX vs numpy max diff {err:.2e}")
        if arch == ship:
            shipped = (f, path)

    # The shipped file is the chosen architecture with the spread each task type keeps
    # (`routing_keep`); predictor/build keeps it as fitted, for the bench's ablation.
    args.ship_to.parent.mkdir(parents=True, exist_ok=True)
    if keep:
        f, _ = shipped
        heads = with_keep(f.heads, feat, x, scores, keep)
        meta = _meta(ship, table, cfg, commit, caps, models if f.uses_scores else [],
                     user if len(heads.layers) == 1 else None)
        meta["spread_kept"] = {task: keep.get(task, 1.0) for task in TASK_TYPES}
        export.save(export.build(heads, meta, n_features=feat.n_features), args.ship_to)
        err = export.check(args.ship_to, {"features": xc}, heads.outputs(xc), atol=1e-4)
        exported["shipped"] = {"path": args.ship_to.name, "architecture": ship, "spread_kept": meta["spread_kept"],
                               "bytes": args.ship_to.stat().st_size, "max_abs_diff_vs_numpy": err}
        print(f"shipped {ship} keeping " + ", ".join(f"{t} {k:g}" for t, k in keep.items())
              + f" of its spread; ONNX vs numpy max diff {err:.2e}")
    else:
        shutil.copyfile(shipped[1], args.ship_to)
    tok = args.ship_to.parent / TOKENIZER_FILE
    if not tok.exists():
        shutil.copyfile(PREDICTOR_DIR / TOKENIZER_FILE, tok)
    print(f"shipped {ship} -> {args.ship_to} ({args.ship_to.stat().st_size / 1e6:.2f} MB)")
    # The acceptance a forced drafting pair drafts by before its drafts are logged: same rows.
    priors.write(args.data, args.ship_to.parent / priors.OUT.name,
                 " ".join(["python", "-m", "predictor.train", *args.argv]), keys)

    args.results.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": {"prompts": len(table.prompts), "rows": table.n_rows, "verifiers": table.verifiers,
                 "acceptance_keys": table.acc_keys,
                 "per_dataset": {d: int((table.datasets == d).sum()) for d in sorted(set(table.datasets))},
                 "censored_answers": {d: {v: int(table.censored[table.datasets == d, j].sum())
                                          for j, v in enumerate(table.verifiers)} for d in sorted(set(table.datasets))},
                 "caps": caps, "keys": [f"{d}:{i}" for d, i in zip(table.datasets, table.ids)],
                 "user_phrased": {d: int((user.datasets == d).sum()) for d in sorted(set(user.datasets))}},
        "folds": args.folds,
        "results": results,
        "selection": selection,
        "exported": exported,
        "shipped": ship,
        "difficulty": {m.name: m.facts for m in models},
        "evouna_metric_check": {} if args.no_human else evouna_metric_check(),
        "hanna_check": {} if args.no_human else hanna_check(),
        "commit": commit,
        # Commit, date, machine and command (BLAS is held to one thread while training).
        "provenance": provenance.record(" ".join(["python", "-m", "predictor.train", *args.argv]), threads=1),
        "seconds": round(time.time() - t0, 1),
        **facts,
    }
    args.results.write_text(json.dumps(summary, indent=1, default=_json_default))
    print(f"wrote {args.results} in {time.time() - t0:.0f}s")
    return 0


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return None


if __name__ == "__main__":
    sys.exit(main())
