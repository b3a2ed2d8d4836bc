"""Difficulty models: how hard a prompt is, read from its text alone, learned from labels that
need no generation, and shipped inside the predictor graph (export.TaskTerms).

- `gsm8k-steps`: the number of calculator steps (`<<a*b=c>>`) in the reference solution of
  every GSM8K train question (7,473). The step count is a training-only label; what ships is a
  ridge model that predicts it from the question.
- `nq-evouna`: the share of the four strong QA systems (GPT-3.5, ChatGPT, GPT-4, Bing Chat)
  whose answer EVOUNA's annotators judged right, for EVOUNA-TQ questions and EVOUNA-NQ
  questions on the train side of the NQ split (never a bench question; see splits.py).

Both are ridge regressions on the featurizer's hashed features of the question as the task
asks it (`TASKS[d].prompt`), so they read exactly what the predictor reads at run time. Their
outputs are standardised (mean 0, sd 1 over their training questions): the predictor's
regularisation then treats them alike.

Cross-fitting: the predictor's own training prompts are GSM8K train and NQ train-side
questions, so most of them are in these models' training data, where a ridge model fits
better than it will on new prompts. A predictor trained on such in-sample scores would trust
them too much. `DifficultyModel.cross_fitted` therefore scores a prompt with a model fitted
without the prompt's question (folds by a hash of the question key); serving uses the model
fitted on every question.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from predictor import export
from qroute_cli.evaluation import splits
from qroute_cli.evaluation.tasks import TASKS
from qroute_cli.jsonl import read_jsonl
from qroute_cli.routing.features import Featurizer

FOLDS = 5
ALPHA = {"gsm8k-steps": 3.0, "nq-evouna": 10.0}  # chosen by 5-fold CV Spearman (predictor/REPORT.md)
STRONG_SYSTEMS = ("gpt35", "chatgpt", "gpt4", "newbing")  # FiD is far weaker than the others
NAMES = ("gsm8k-steps", "nq-evouna")
# The router task type (routing.router.task_type) each model speaks for.
TASK_TYPE = {"gsm8k-steps": "math", "nq-evouna": "qa"}
# Sign that makes "higher = harder" for each score, for reports.
HARDER = {"gsm8k-steps": 1.0, "nq-evouna": -1.0}


@dataclass
class Labels:
    """Training questions of one difficulty model: prompts as the task asks them, targets."""

    name: str
    prompts: list[str]
    targets: np.ndarray
    sources: list[str]  # per question: the shipped-hash source it is listed under
    keys: list[str]  # splits.question_key of each question


def gsm8k_steps_labels(root: Path | None = None) -> Labels:
    """Every GSM8K train question with the calculator steps of its reference solution."""
    root = root or splits.data_root()
    prompts, targets, keys = [], [], []
    # GSM8K's train side is all of train.jsonl (splits.py); the reference solution is only here.
    for r in read_jsonl(root / "gsm8k" / "train.jsonl"):
        prompts.append(TASKS["gsm8k"].prompt(r["question"]))
        targets.append(float(r["answer"].count("<<")))
        keys.append(splits.question_key(r["question"]))
    return Labels("gsm8k-steps", prompts, np.array(targets), ["gsm8k"] * len(prompts), keys)


def evouna_labels(root: Path | None = None) -> Labels:
    """EVOUNA questions (TQ all, NQ train side only) with the share of strong systems judged right."""
    root = root or splits.data_root()
    prompts, targets, sources, keys = [], [], [], []
    for name, source in (("evouna_tq.json", "evouna-tq"), ("evouna_nq.json", "evouna-nq")):
        for r in json.loads((root / "human_quality" / name).read_text(encoding="utf-8")):
            if r.get("improper") is True:
                continue
            if source == "evouna-nq" and splits.nq_side(r["question"]) != "train":
                continue  # a bench question: never read
            judged = [r.get(f"judge_{s}") for s in STRONG_SYSTEMS]
            judged = [j for j in judged if isinstance(j, bool)]
            if len(judged) >= 3:
                prompts.append(TASKS["nq"].prompt(r["question"]))
                targets.append(float(np.mean(judged)))
                sources.append(source)
                keys.append(splits.question_key(r["question"]))
    return Labels("nq-evouna", prompts, np.array(targets), sources, keys)


def fold_of(prompt: str, folds: int = FOLDS) -> int:
    """A prompt's cross-fitting fold, fixed by the key of the prompt as the task asks it: the
    same question asked by the same task lands in the same fold, whatever its spelling."""
    return int(hashlib.sha256(splits.question_key(prompt).encode()).hexdigest()[:8], 16) % folds


@dataclass
class DifficultyModel:
    """One ridge difficulty model: the shipped fit, its cross-fitting folds and held-out facts."""

    name: str
    full: export.Dense  # (n_features, 1), standardised output
    folds: list[export.Dense] = field(default_factory=list)  # fold k: fitted without fold k's questions
    facts: dict = field(default_factory=dict)

    def score(self, x: np.ndarray) -> np.ndarray:
        return (x @ self.full.w + self.full.b)[:, 0]

    def cross_fitted(self, x: np.ndarray, fold_ids: Sequence[int]) -> np.ndarray:
        """Scores where each row is read by the model that did not train on its fold."""
        out = np.empty(len(x))
        for k, layer in enumerate(self.folds):
            rows = np.flatnonzero(np.asarray(fold_ids) == k)
            if rows.size:
                out[rows] = (x[rows] @ layer.w + layer.b)[:, 0]
        return out


def _ridge(x, y: np.ndarray, alpha: float, mu: float, sd: float) -> export.Dense:
    from sklearn.linear_model import Ridge

    m = Ridge(alpha=alpha, solver="sparse_cg", tol=1e-6).fit(x, (y - mu) / sd)
    return export.Dense(m.coef_[:, None].astype(np.float32), np.array([m.intercept_], np.float32))


def fit(labels: Labels, featurizer: Featurizer, alpha: float | None = None) -> DifficultyModel:
    """Ridge on hashed features, standardised target; the full fit and one per fold."""
    from scipy.sparse import csr_matrix
    from scipy.stats import spearmanr

    alpha = ALPHA[labels.name] if alpha is None else alpha
    x = csr_matrix(featurizer.hashed(labels.prompts))  # ~1% non-zero: sparse solvers are fast
    y = labels.targets
    mu, sd = float(y.mean()), float(y.std() or 1.0)
    fold_ids = np.array([fold_of(p) for p in labels.prompts])
    folds, oof = [], np.zeros_like(y)
    for k in range(FOLDS):
        tr, te = fold_ids != k, fold_ids == k
        layer = _ridge(x[tr], y[tr], alpha, mu, sd)
        folds.append(layer)
        oof[te] = np.asarray(x[te] @ layer.w)[:, 0] + layer.b[0]
    full = _ridge(x, y, alpha, mu, sd)
    facts = {
        "questions": len(y),
        "by_source": {s: labels.sources.count(s) for s in sorted(set(labels.sources))},
        "target_mean": mu, "target_sd": sd, "alpha": alpha,
        "cv_spearman": float(spearmanr(oof, y)[0]),
        "keys_sha256": keys_digest(labels.keys),
    }
    if labels.name == "nq-evouna":
        nq = np.array([s == "evouna-nq" for s in labels.sources])
        facts["cv_spearman_nq_questions"] = float(spearmanr(oof[nq], y[nq])[0])
    return DifficultyModel(labels.name, full, folds, facts)


def keys_digest(keys: Sequence[str]) -> str:
    """SHA-256 of the sorted, de-duplicated question keys a model read (recorded in the file)."""
    return hashlib.sha256("\n".join(sorted(set(keys))).encode()).hexdigest()


def fit_all(featurizer: Featurizer, root: Path | None = None) -> tuple[list[DifficultyModel], dict[str, Labels]]:
    """Both difficulty models, in NAMES order, and the labels they were fitted on."""
    labels = {"gsm8k-steps": gsm8k_steps_labels(root), "nq-evouna": evouna_labels(root)}
    return [fit(labels[n], featurizer) for n in NAMES], labels


def stacked(models: Sequence[DifficultyModel]) -> export.Dense:
    """The models as one (n_features, K) layer, for the graph."""
    return export.Dense(np.concatenate([m.full.w for m in models], axis=1),
                        np.concatenate([m.full.b for m in models]))


def cross_fitted(models: Sequence[DifficultyModel], x: np.ndarray, prompts: Sequence[str]) -> np.ndarray:
    """(n, K) scores of training prompts, each from models that never saw its question."""
    fold_ids = [fold_of(p) for p in prompts]
    return np.stack([m.cross_fitted(x, fold_ids) for m in models], axis=1)


def write_keys(labels: dict[str, Labels], path: Path) -> int:
    """The question keys every difficulty model read, as 'model source key' lines (gzip, same
    bytes on every run), so a clone without the source data can check none is a bench question."""
    import gzip

    lines = sorted({f"{lab.name} {s} {k}" for lab in labels.values() for s, k in zip(lab.sources, lab.keys)})
    header = "# Questions the predictor's difficulty models read (predictor/difficulty.py); splits.question_key.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress((header + "\n".join(lines) + "\n").encode(), compresslevel=9, mtime=0))
    return len(lines)


def read_keys(path: Path) -> dict[str, set[str]]:
    """Keys by difficulty model, from `write_keys`'s file."""
    import gzip

    out: dict[str, set[str]] = {}
    with gzip.open(path, "rt", encoding="ascii") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                name, _source, key = line.split()
                out.setdefault(name, set()).add(key)
    return out
