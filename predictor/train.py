"""Train the quality predictor, compare architectures by cross-validation, export to ONNX.

    python -m predictor.train                  # CV ablation + export every architecture
    python -m predictor.train --ship hashed-mlp  # which one goes into the package

Data: predictor/data/responses.jsonl.gz (predictor/datagen.py). One example per prompt with
answers from every verifier; targets are quality per verifier, acceptance per
(verifier, drafter) and log1p(output tokens) per verifier, learned jointly (multi-task).

Architectures (the ablation):
- hashed-ridge        hashed WordPiece uni+bigrams + shape features -> ridge (linear)
- hashed-mlp          same features -> one hidden layer MLP
- hashed-mlp+evouna   hashed-mlp plus a difficulty score pre-trained on EVOUNA human labels
- minilm-ridge        all-MiniLM-L6-v2 sentence embedding + shape features -> ridge
- minilm-mlp          same embedding -> MLP
Baselines: per-data-set mean (knows the data set: a strong one), prompt length only.

Held-out figures are out-of-fold predictions of a K-fold split by prompt (no prompt is in
its own training fold). Results go to predictor/results/cv.json for predictor/report.py.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from predictor import datagen, export
from qroute_cli.evaluation import splits
from qroute_cli.evaluation.tasks import TASKS
from qroute_cli.routing.features import N_DENSE, PREDICTOR_DIR, TOKENIZER_FILE, Featurizer, FeaturizerConfig

HERE = Path(__file__).resolve().parent
BUILD = HERE / "build"
RESULTS = HERE / "results"
SHIPPED = PREDICTOR_DIR / "predictor.onnx"
ARCHS = ("hashed-ridge", "hashed-mlp", "hashed-mlp+evouna", "minilm-ridge", "minilm-mlp")
BASELINES = ("dataset-mean", "length-only")
SEED = 0


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
    length: np.ndarray  # (n, V) output tokens
    n_rows: int = 0

    def targets(self, acc_fill: np.ndarray) -> np.ndarray:
        acc = np.where(np.isnan(self.acceptance), acc_fill[None, :], self.acceptance)
        return np.concatenate([self.quality, acc, np.log1p(self.length)], axis=1).astype(np.float64)


def load_table(path: Path, verifiers: list[str] | None = None) -> Table:
    """Rows -> Table, keeping prompts answered by every verifier."""
    rows = datagen.read_rows(path)
    verifiers = verifiers or sorted({r["model"] for r in rows})
    acc_keys = sorted({k for r in rows for k in r.get("acceptance", {}) if r["model"] in verifiers})
    by_prompt: dict[tuple[str, str], dict[str, dict]] = {}
    for r in rows:
        if r["model"] in verifiers:
            by_prompt.setdefault((r["dataset"], r["id"]), {})[r["model"]] = r
    keep = [(k, v) for k, v in sorted(by_prompt.items()) if all(m in v for m in verifiers)]
    n, nv, na = len(keep), len(verifiers), len(acc_keys)
    q, ln = np.zeros((n, nv)), np.zeros((n, nv))
    acc = np.full((n, na), np.nan)
    for i, (_, per_model) in enumerate(keep):
        for j, m in enumerate(verifiers):
            r = per_model[m]
            q[i, j] = r["scores"]["quality"]
            ln[i, j] = r["output_tokens"]
            for a, key in enumerate(acc_keys):
                val = r.get("acceptance", {}).get(key)
                if val is not None:
                    acc[i, a] = val
    prompts = [next(iter(v.values()))["prompt"] for _, v in keep]
    return Table(prompts, np.array([k[0] for k, _ in keep]), [k[1] for k, _ in keep], verifiers, acc_keys,
                 q, acc, ln, n_rows=sum(len(v) for _, v in keep))


# --------------------------------------------------------------------------- model fitting

def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> list[export.Dense]:
    from sklearn.linear_model import Ridge

    m = Ridge(alpha=alpha).fit(x, y)
    return [export.Dense(m.coef_.T.astype(np.float32), m.intercept_.astype(np.float32))]


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


def fit_heads(arch: str, x: np.ndarray, y: np.ndarray, nv: int, na: int, pre: export.Dense | None = None) -> export.Heads:
    if pre is not None:
        x = np.concatenate([x, np.clip(x @ pre.w + pre.b, 0, 1)], axis=1)
    if arch.endswith("ridge"):
        layers = fit_ridge(x, y, alpha=1.0 if arch.startswith("hashed") else 3.0)
    else:
        layers = fit_mlp(x, y, hidden=32, alpha=1.0)
    return export.Heads(layers, nv, na, pre=pre)


def length_only_heads(x: np.ndarray, y: np.ndarray, nv: int, na: int) -> export.Heads:
    """The 'length-only' baseline as hashed-input heads: a linear fit on the log_tokens column
    alone (every other weight zero), so the bench can route with it like any predictor file."""
    from sklearn.linear_model import LinearRegression

    col = FeaturizerConfig().n_buckets  # log_tokens, the first dense feature
    fit = LinearRegression().fit(x[:, col:col + 1], y)
    w = np.zeros((x.shape[1], y.shape[1]), dtype=np.float32)
    w[col] = fit.coef_[:, 0]
    return export.Heads([export.Dense(w, fit.intercept_.astype(np.float32))], nv, na)



# --------------------------------------------------------------------------- EVOUNA difficulty

def evouna_difficulty(featurizer: Featurizer, root: Path | None = None) -> tuple[export.Dense, dict]:
    """Ridge from hashed prompt features to the share of 5 QA systems a human judged correct.

    Trained on EVOUNA-TQ (all) and EVOUNA-NQ questions on the train side of the NQ split, each
    phrased like our NQ prompts. Returns the layer and held-out facts for the report.
    """
    from scipy.stats import spearmanr
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import KFold

    root = root or splits.data_root()
    items: list[tuple[str, float]] = []
    for name in ("evouna_tq.json", "evouna_nq.json"):
        for r in json.loads((root / "human_quality" / name).read_text()):
            if r.get("improper") is True:
                continue
            if name == "evouna_nq.json" and splits.nq_side(r["question"]) != "train":
                continue
            labels = [r[k] for k in r if k.startswith("judge_") and isinstance(r[k], bool)]
            if len(labels) >= 3:
                q = r["question"].strip()
                prompt = datagen.prompt_for(splits.Row("nq", "", q, None))
                items.append((prompt, float(np.mean(labels))))
    from scipy.sparse import csr_matrix

    x = csr_matrix(featurizer.hashed([p for p, _ in items]))  # ~1% non-zero: sparse solvers are fast
    y = np.array([t for _, t in items])
    oof = np.zeros_like(y)
    for tr, te in KFold(5, shuffle=True, random_state=SEED).split(x):
        oof[te] = Ridge(alpha=3.0, solver="sparse_cg").fit(x[tr], y[tr]).predict(x[te])
    m = Ridge(alpha=3.0, solver="sparse_cg").fit(x, y)
    facts = {"questions": len(items), "cv_spearman": float(spearmanr(oof, y)[0]), "mean_correct": float(y.mean())}
    return export.Dense(m.coef_[:, None].astype(np.float32), np.array([m.intercept_], np.float32)), facts


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


def _binary(t: Table, idx: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Correct/incorrect for AUC: the task's line for a correct answer (gsm8k: EM, nq:
    quality >= 0.5), else above the data set's median quality (wp)."""
    d = t.datasets[idx][0]
    line = TASKS[d].correct_at
    if line is not None:
        return (q >= line).astype(float)
    return (q > np.median(t.quality[t.datasets == d])).astype(float)


def evaluate(t: Table, pred: dict[str, np.ndarray], constant_within: bool = False) -> dict:
    """Held-out figures per data set (and 'all') and per verifier.

    constant_within: the method predicts one value per data set (dataset-mean). Its within-set
    ρ and AUC are undefined; computing them would only measure how the fold means move.
    """
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
            res["quality"][v] = {
                "spearman": None if undefined else _spearman(p, y),
                "auc": _auc(p, _binary(t, idx, y)) if g != "all" and not undefined else None,
                "mae": float(np.mean(np.abs(p - y))),
                "actual_mean": float(y.mean()),
            }
            pl, yl = pred["length"][idx, j], t.length[idx, j]
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


def _outputs_from_raw(raw: np.ndarray, nv: int, na: int) -> dict[str, np.ndarray]:
    return {
        "quality": np.clip(raw[:, :nv], 0, 1),
        "acceptance": np.clip(raw[:, nv: nv + na], 0, 1),
        "length": np.maximum(np.expm1(raw[:, nv + na:]), 1.0),
    }


def baseline_predictions(name: str, t: Table, tr: np.ndarray, te: np.ndarray, y: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    if name == "dataset-mean":
        raw = np.zeros((len(te), y.shape[1]))
        for i, k in enumerate(te):
            same = tr[t.datasets[tr] == t.datasets[k]]
            raw[i] = y[same].mean(0) if len(same) else y[tr].mean(0)
        return raw
    if name == "length-only":
        from sklearn.linear_model import LinearRegression

        x = lengths[:, None]
        return LinearRegression().fit(x[tr], y[tr]).predict(x[te])
    raise ValueError(name)


def cross_validate(t: Table, feats: dict[str, np.ndarray], pre_fn, folds: int) -> dict[str, dict[str, np.ndarray]]:
    """Out-of-fold predictions for every architecture and baseline."""
    from sklearn.model_selection import StratifiedKFold

    nv, na = len(t.verifiers), len(t.acc_keys)
    oof = {name: np.zeros((len(t.prompts), 2 * nv + na)) for name in ARCHS + BASELINES}
    lengths = feats["hashed"][:, FeaturizerConfig().n_buckets]  # log_tokens column
    skf = StratifiedKFold(folds, shuffle=True, random_state=SEED)
    for tr, te in skf.split(t.prompts, t.datasets):
        acc_fill = np.nan_to_num(np.nanmean(t.acceptance[tr], axis=0), nan=0.5)
        y = t.targets(acc_fill)
        for arch in ARCHS:
            x = feats["hashed"] if arch.startswith("hashed") else feats["minilm"]
            pre = pre_fn() if arch.endswith("+evouna") else None
            if x is None or (arch.endswith("+evouna") and pre is None):
                continue
            heads = fit_heads(arch, x[tr], y[tr], nv, na, pre)
            oof[arch][te] = heads.raw(x[te])
        for b in BASELINES:
            oof[b][te] = baseline_predictions(b, t, tr, te, y, lengths)
    skip = {a for a in ARCHS if feats["hashed" if a.startswith("hashed") else "minilm"] is None
            or (a.endswith("+evouna") and pre_fn() is None)}
    return {k: _outputs_from_raw(v, nv, na) for k, v in oof.items() if k not in skip}


# --------------------------------------------------------------------------- main

def _meta(arch: str, t: Table, cfg: FeaturizerConfig, inputs: str, commit: str, caps: dict[str, int]) -> dict:
    counts = {d: int((t.datasets == d).sum()) for d in sorted(set(t.datasets))}
    return {
        "name": arch,
        "architecture": arch,
        "inputs": inputs,
        "featurizer": cfg.to_json(),
        "tokenizer": TOKENIZER_FILE,
        "verifiers": t.verifiers,
        "acceptance_keys": t.acc_keys,
        "quality": "gsm8k exact match / nq token F1 / writingprompts ROUGE-L, in [0, 1]",
        "length": "expected output tokens at the training caps (" + ", ".join(f"{d} {c}" for d, c in caps.items()) + ")",
        "trained_on": {"prompts": len(t.prompts), "rows": t.n_rows, "per_dataset": counts},
        "commit": commit,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m predictor.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=datagen.DEFAULT_OUT)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--ship", default="auto", help="architecture copied into the package ('auto': best light model)")
    ap.add_argument("--no-encoder", action="store_true", help="skip the MiniLM architectures")
    ap.add_argument("--no-human", action="store_true", help="skip the EVOUNA/HANNA parts (and hashed-mlp+evouna)")
    ap.add_argument("--build-dir", type=Path, default=BUILD, help="where every architecture's .onnx goes")
    ap.add_argument("--ship-to", type=Path, default=SHIPPED, help="the packaged predictor file")
    ap.add_argument("--results", type=Path, default=RESULTS / "cv.json")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    # One BLAS thread: on a busy 2-core machine, spinning BLAS threads make small products 100x slower.
    with threadpool_limits(1):
        return _train(args)


def _train(args) -> int:
    t0 = time.time()
    table = load_table(args.data)
    if len(table.prompts) < 2 * args.folds:
        print(f"only {len(table.prompts)} complete prompts in {args.data}: generate more first", file=sys.stderr)
        return 1
    print(f"{len(table.prompts)} prompts x {len(table.verifiers)} verifiers ({table.n_rows} rows): "
          + ", ".join(f"{d}={int((table.datasets == d).sum())}" for d in sorted(set(table.datasets))))
    cfg = FeaturizerConfig()
    feat = Featurizer(PREDICTOR_DIR / TOKENIZER_FILE, cfg)
    feats: dict[str, np.ndarray | None] = {"hashed": feat.hashed(table.prompts), "minilm": None}
    enc_w = None
    if not args.no_encoder:
        from predictor import encoder

        enc_w = encoder.load_weights()
        emb = encoder.embed_prompts(enc_w, feat, table.prompts)
        feats["minilm"] = np.concatenate([emb, feat.dense(table.prompts)], axis=1)
    print(f"features ready in {time.time() - t0:.1f}s")

    pre_layer, evouna_facts = (None, {}) if args.no_human else evouna_difficulty(feat)
    print(f"EVOUNA difficulty: {evouna_facts}")
    oof = cross_validate(table, feats, lambda: pre_layer, args.folds)
    results = {name: evaluate(table, pred, constant_within=name == "dataset-mean") for name, pred in oof.items()}

    # Does the EVOUNA difficulty score track our verifiers' NQ quality?
    from scipy.stats import spearmanr

    nq = table.datasets == "nq"
    if pre_layer is not None:
        diff = np.clip(feats["hashed"][nq] @ pre_layer.w + pre_layer.b, 0, 1)[:, 0]
        evouna_facts["spearman_vs_our_nq_quality"] = float(spearmanr(diff, table.quality[nq].mean(1))[0]) if nq.sum() > 2 else None

    # Fit every architecture on all data, export, check ONNX against numpy.
    commit = datagen.git_commit()
    acc_fill = np.nan_to_num(np.nanmean(table.acceptance, axis=0), nan=0.5)
    y = table.targets(acc_fill)
    nv, na = len(table.verifiers), len(table.acc_keys)
    exported = {}
    args.build_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PREDICTOR_DIR / TOKENIZER_FILE, args.build_dir / TOKENIZER_FILE)
    check_prompts = table.prompts[:8] + ["hi", "Write a Python function that reverses a linked list."]
    caps = datagen.caps_used(args.data)
    # The length-only baseline is exported too, so the bench can route with it (never shipped).
    for arch in ARCHS + ("length-only",):
        inputs = "encoder" if arch.startswith("minilm") else "hashed"
        x = feats["minilm"] if inputs == "encoder" else feats["hashed"]
        if x is None or (arch.endswith("+evouna") and pre_layer is None):
            continue
        if arch == "length-only":
            heads = length_only_heads(x, y, nv, na)
        else:
            heads = fit_heads(arch, x, y, nv, na, pre_layer if arch.endswith("+evouna") else None)
        model = export.build(heads, _meta(arch, table, cfg, inputs, commit, caps),
                             encoder_weights=enc_w if inputs == "encoder" else None,
                             n_features=feat.n_features, fp16=inputs == "encoder")
        path = args.build_dir / f"{arch}.onnx"
        size = export.save(model, path)
        if inputs == "hashed":
            xc = feat.hashed(check_prompts)
            feeds = {"features": xc}
        else:
            from predictor import encoder

            ids, mask = feat.encoder_inputs(check_prompts)
            dense = feat.dense(check_prompts)
            xc = np.concatenate([encoder.embed(enc_w, ids, mask), dense], axis=1)
            feeds = {"input_ids": ids, "attention_mask": mask, "dense": dense}
        err = export.check(path, feeds, heads.outputs(xc), atol=2e-2 if inputs == "encoder" else 1e-4)
        exported[arch] = {"path": path.name, "bytes": size, "max_abs_diff_vs_numpy": err}
        print(f"exported {arch}: {size / 1e6:.2f} MB, ONNX vs numpy max diff {err:.2e}")

    light = [a for a in ARCHS if a.startswith("hashed") and a in exported]
    ship = args.ship
    if ship == "auto":
        def score(a: str) -> float:
            q = [v["spearman"] for d, r in results[a].items() if d != "all" for v in r["quality"].values() if v["spearman"] is not None]
            return float(np.mean(q)) if q else -1.0
        ship = max(light, key=score)
    args.ship_to.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.build_dir / f"{ship}.onnx", args.ship_to)
    tok = args.ship_to.parent / TOKENIZER_FILE
    if not tok.exists():
        shutil.copyfile(PREDICTOR_DIR / TOKENIZER_FILE, tok)
    print(f"shipped {ship} -> {args.ship_to} ({args.ship_to.stat().st_size / 1e6:.2f} MB)")

    args.results.parent.mkdir(parents=True, exist_ok=True)
    summary = {
        "data": {"prompts": len(table.prompts), "rows": table.n_rows, "verifiers": table.verifiers,
                 "acceptance_keys": table.acc_keys,
                 "per_dataset": {d: int((table.datasets == d).sum()) for d in sorted(set(table.datasets))}},
        "folds": args.folds,
        "results": results,
        "exported": exported,
        "shipped": ship,
        "evouna_difficulty": evouna_facts,
        "evouna_metric_check": {} if args.no_human else evouna_metric_check(),
        "hanna_check": {} if args.no_human else hanna_check(),
        "commit": commit,
        "seconds": round(time.time() - t0, 1),
    }
    args.results.write_text(json.dumps(summary, indent=1, default=lambda o: None if isinstance(o, float) and math.isnan(o) else o))
    print(f"wrote {args.results} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
