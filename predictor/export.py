"""Trained heads -> one ONNX file that qroute_cli/routing/predict.py runs with onnxruntime.

Graph contract (what predict.py relies on):
- inputs: "features" float32 (n, n_buckets + N_DENSE) for the hashed architecture; or
  "input_ids", "attention_mask" int64 (n, L) and "dense" float32 (n, N_DENSE) for the encoder.
- outputs: "quality" (n, V) in [0, 1], "acceptance" (n, A) in [0, 1], "length" (n, V) >= 1
  tokens, in the order of metadata "verifiers" and "acceptance_keys" ("VERIFIER+DRAFTER");
  with per-task terms also "difficulty" (n, K), the difficulty models' scores (metadata
  "difficulty" names them), for reports and `qroute score`; the router does not read it.
- metadata_props "qroute_predictor": JSON with architecture, featurizer config, the key lists
  and training facts (rows, commit, date).

Heads are a list of dense layers (W (in, out), b, activation); target scaling is folded
into the last layer, so the graph's raw output is [quality | acceptance | log1p(length)].
Per-task terms (`TaskTerms`) come first: linear difficulty models read the same features,
and each task one-hot multiplies [some dense features | difficulty scores], so a linear head
can give every task its own slope. A per-task calibration (`Calibration`) comes last, on the
quality outputs: it shrinks what the heads say within a task towards the task's mean by how
well such predictions ranked held-out prompts of that task.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from predictor.graph import add_initializer

OPSET = 18
META_KEY = "qroute_predictor"


@dataclass
class Dense:
    w: np.ndarray  # (in, out)
    b: np.ndarray  # (out,)
    act: str = "none"  # "relu" or "none"


@dataclass
class TaskTerms:
    """Per-task terms appended to the input: task one-hot x [chosen columns | difficulty scores],
    kept where `mask` (tasks x columns+scores) is 1: a difficulty model speaks for its own task."""

    difficulty: Dense  # (n_features, K) linear difficulty scores read from the same input
    columns: tuple[int, ...]  # input columns (dense features) that get a slope per task
    task_cols: tuple[int, ...]  # the task-type one-hot columns of the input
    mask: np.ndarray  # (len(task_cols), len(columns) + K) of 0 / 1
    clip: float = 3.0  # scores are standardised; a prompt far outside a model's data is read at +-clip

    @property
    def n_terms(self) -> int:
        return len(self.task_cols) * (len(self.columns) + self.difficulty.b.shape[0])

    def scores(self, x: np.ndarray) -> np.ndarray:
        return np.clip(x @ self.difficulty.w + self.difficulty.b, -self.clip, self.clip)

    def expand(self, x: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """[x | interactions]; `scores` replaces the difficulty models' output (training uses
        cross-fitted scores, so no prompt sees a model trained on its own question)."""
        s = self.scores(x) if scores is None else np.clip(scores, -self.clip, self.clip)
        base = np.concatenate([x[:, list(self.columns)], s], axis=1)
        t = x[:, list(self.task_cols)]
        inter = (t[:, :, None] * base[:, None, :] * self.mask[None, :, :]).reshape(len(x), -1)
        return np.concatenate([x, inter], axis=1)


@dataclass
class Calibration:
    """Quality per task, recalibrated: for a prompt whose task one-hot is t,
    quality = offset[t] + scale[t] * raw quality, per verifier. Training fits scale in [0, 1] on
    held-out predictions of that task's prompts: near 1 where the heads rank them, 0 where
    they cannot (the task's mean quality then stands for every prompt of it). A prompt with no
    task column set keeps its raw value."""

    task_cols: tuple[int, ...]  # the task-type one-hot columns of the input
    scale: np.ndarray  # (len(task_cols), V)
    offset: np.ndarray  # (len(task_cols), V)

    def apply(self, x: np.ndarray, quality: np.ndarray) -> np.ndarray:
        t = x[:, list(self.task_cols)]
        return quality * (1.0 + t @ (self.scale - 1.0)) + t @ self.offset


@dataclass
class Heads:
    """Multi-task heads: optional difficulty pre-layer or per-task terms, then dense layers to raw outputs."""

    layers: list[Dense]
    n_quality: int
    n_acceptance: int
    pre: Dense | None = None  # a linear difficulty score appended to the input (clipped to [0, 1])
    meta: dict[str, Any] = field(default_factory=dict)
    terms: TaskTerms | None = None
    calibration: Calibration | None = None

    def raw(self, x: np.ndarray, scores: np.ndarray | None = None) -> np.ndarray:
        """The numpy forward pass the ONNX graph must reproduce (`scores`: see TaskTerms.expand)."""
        given = x
        if self.pre is not None:
            x = np.concatenate([x, np.clip(x @ self.pre.w + self.pre.b, 0.0, 1.0)], axis=1)
        if self.terms is not None:
            x = self.terms.expand(x, scores)
        for layer in self.layers:
            x = x @ layer.w + layer.b
            if layer.act == "relu":
                x = np.maximum(x, 0.0)
        if self.calibration is not None:
            x = np.concatenate([self.calibration.apply(given, x[:, :self.n_quality]), x[:, self.n_quality:]], axis=1)
        return x

    def outputs(self, x: np.ndarray, scores: np.ndarray | None = None) -> dict[str, np.ndarray]:
        raw = self.raw(x, scores)
        v, a = self.n_quality, self.n_acceptance
        out = {
            "quality": np.clip(raw[:, :v], 0.0, 1.0),
            "acceptance": np.clip(raw[:, v: v + a], 0.0, 1.0),
            "length": np.maximum(np.expm1(raw[:, v + a:]), 1.0),
        }
        if self.terms is not None:
            out["difficulty"] = self.terms.scores(x) if scores is None else scores
        return out


def _head_nodes(heads: Heads, x: str, fp16: bool):
    from onnx import helper

    nodes, inits = [], []
    counter = [0]

    def const(arr, base):
        counter[0] += 1
        arr = np.asarray(arr, dtype=np.float32) if np.asarray(arr).dtype.kind == "f" else np.asarray(arr)
        return add_initializer(nodes, inits, arr, f"head_{base}_{counter[0]}", fp16)

    def node(op, inputs, out=None, **attrs):
        counter[0] += 1
        out = out or f"head_{op.lower()}_{counter[0]}"
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    zero, one = const(np.array(0.0, np.float32), "zero"), const(np.array(1.0, np.float32), "one")
    given = x
    if heads.pre is not None:
        d = node("Clip", [node("Add", [node("MatMul", [x, const(heads.pre.w, "pw")]), const(heads.pre.b, "pb")]), zero, one])
        x = node("Concat", [x, d], axis=1)
    if heads.terms is not None:
        t = heads.terms
        lo, hi = const(np.array(-t.clip, np.float32), "lo"), const(np.array(t.clip, np.float32), "hi")
        d = node("Clip", [node("Add", [node("MatMul", [x, const(t.difficulty.w, "dw")]), const(t.difficulty.b, "db")]), lo, hi],
                 out="difficulty")
        cols = node("Gather", [x, const(np.array(t.columns, np.int64), "cols")], axis=1)
        base = node("Concat", [cols, d], axis=1)
        tasks = node("Gather", [x, const(np.array(t.task_cols, np.int64), "tasks")], axis=1)
        outer = node("Mul", [node("Mul", [node("Unsqueeze", [tasks, const(np.array([2], np.int64), "ax")]),
                                          node("Unsqueeze", [base, const(np.array([1], np.int64), "ax")])]),
                             const(t.mask.astype(np.float32)[None, :, :], "mask")])
        flat = node("Reshape", [outer, const(np.array([-1, t.n_terms], np.int64), "shape")])
        x = node("Concat", [x, flat], axis=1)
    for layer in heads.layers:
        x = node("Add", [node("MatMul", [x, const(layer.w, "w")]), const(layer.b, "b")])
        if layer.act == "relu":
            x = node("Relu", [x])
    v, a = heads.n_quality, heads.n_acceptance
    total = heads.layers[-1].b.shape[0]
    sizes = const(np.array([v, a, total - v - a], np.int64), "split")
    nodes.append(helper.make_node("Split", [x, sizes], ["q_raw", "a_raw", "l_raw"], axis=1))
    q = "q_raw"
    if heads.calibration is not None:
        c = heads.calibration
        tasks = node("Gather", [given, const(np.array(c.task_cols, np.int64), "calt")], axis=1)
        scale = node("Add", [one, node("MatMul", [tasks, const(c.scale - 1.0, "cals")])])
        q = node("Add", [node("Mul", [q, scale]), node("MatMul", [tasks, const(c.offset, "calo")])])
    node("Clip", [q, zero, one], out="quality")
    node("Clip", ["a_raw", zero, one], out="acceptance")
    node("Max", [node("Sub", [node("Exp", ["l_raw"]), one]), one], out="length")
    return nodes, inits


def build(heads: Heads, meta: dict[str, Any], *, encoder_weights: dict | None = None, n_features: int | None = None,
          fp16: bool = False):
    """The ONNX ModelProto for hashed features (n_features) or the MiniLM encoder (encoder_weights)."""
    import onnx
    from onnx import TensorProto, helper

    from qroute_cli.routing.features import N_DENSE

    v, a = heads.n_quality, heads.n_acceptance
    outputs = [
        helper.make_tensor_value_info("quality", TensorProto.FLOAT, ["n", v]),
        helper.make_tensor_value_info("acceptance", TensorProto.FLOAT, ["n", a]),
        helper.make_tensor_value_info("length", TensorProto.FLOAT, ["n", v]),
    ]
    if heads.terms is not None:
        k = heads.terms.difficulty.b.shape[0]
        outputs.append(helper.make_tensor_value_info("difficulty", TensorProto.FLOAT, ["n", k]))
    if encoder_weights is None:
        inputs = [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", n_features])]
        nodes, inits = _head_nodes(heads, "features", fp16)
    else:
        from predictor import encoder

        inputs = [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["n", "L"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["n", "L"]),
            helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["n", N_DENSE]),
        ]
        enc_nodes, enc_inits = encoder.onnx_nodes(encoder_weights, "input_ids", "attention_mask", "embedding", fp16=fp16)
        cat = helper.make_node("Concat", ["embedding", "dense"], ["enc_features"], axis=1)
        head_nodes, head_inits = _head_nodes(heads, "enc_features", fp16)
        nodes, inits = enc_nodes + [cat] + head_nodes, enc_inits + head_inits
    graph = helper.make_graph(nodes, "qroute_predictor", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="qroute-predictor")
    model.ir_version = 9  # readable by onnxruntime >= 1.17 (the runtime floor in pyproject)
    helper.set_model_props(model, {META_KEY: json.dumps(meta)})
    onnx.checker.check_model(model)
    return model


def save(model, path: Path) -> int:
    import onnx

    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path.stat().st_size


def check(path: Path, feeds: dict[str, np.ndarray], expected: dict[str, np.ndarray], atol: float = 1e-3) -> float:
    """Largest |onnx - numpy| over all outputs; raises when above `atol`."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    worst = 0.0
    for k, ref in expected.items():
        if not np.size(ref):
            continue  # e.g. no acceptance outputs: a predictor for models without drafters
        scale = np.maximum(1.0, np.abs(ref)) if k == "length" else 1.0  # lengths: relative
        worst = max(worst, float(np.max(np.abs(got[k] - ref) / scale)))
    if worst > atol:
        raise AssertionError(f"{path.name}: ONNX differs from numpy by {worst:.2e} (> {atol})")
    return worst


def random_predictor(path: Path, verifiers: list[str], acceptance_keys: list[str], seed: int = 0, hidden: int = 8) -> Heads:
    """A small hashed-feature predictor with random weights (tests and demos); returns its heads."""
    from qroute_cli.routing.features import PREDICTOR_DIR, TOKENIZER_FILE, FeaturizerConfig

    cfg = FeaturizerConfig(n_buckets=256)
    rng = np.random.default_rng(seed)
    n_in = cfg.n_features
    n_out = 2 * len(verifiers) + len(acceptance_keys)
    bias = np.concatenate([np.full(len(verifiers) + len(acceptance_keys), 0.5), np.full(len(verifiers), np.log(50.0))])
    heads = Heads(
        [Dense(rng.normal(0, 0.5, (n_in, hidden)).astype(np.float32), np.zeros(hidden, np.float32), "relu"),
         Dense(rng.normal(0, 0.3, (hidden, n_out)).astype(np.float32), bias.astype(np.float32))],
        len(verifiers), len(acceptance_keys),
    )
    meta = {"name": f"random-{seed}", "architecture": "random", "inputs": "hashed", "featurizer": cfg.to_json(),
            "tokenizer": TOKENIZER_FILE, "verifiers": list(verifiers), "acceptance_keys": list(acceptance_keys)}
    save(build(heads, meta, n_features=n_in), Path(path))
    tok = Path(path).parent / TOKENIZER_FILE
    if not tok.exists():
        tok.write_bytes((PREDICTOR_DIR / TOKENIZER_FILE).read_bytes())
    return heads


def linear_heads_from_onnx(path: Path) -> Heads:
    """The numpy heads of a linear predictor file (any architecture without hidden layers), read
    back from its initializers: tests check that the graph and the numpy forward pass agree."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    if any(n.op_type == "Relu" for n in model.graph.node):
        raise ValueError(f"{path.name} has hidden layers; only linear heads are read back")
    init = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    by_base: dict[str, list[np.ndarray]] = {}
    for name in sorted(init, key=lambda n: int(n.rsplit("_", 1)[1])):  # creation order
        by_base.setdefault(name.split("_")[1], []).append(init[name])
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == META_KEY))
    v, a = len(meta["verifiers"]), len(meta["acceptance_keys"])
    layers = [Dense(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(by_base["w"], by_base["b"])]
    terms = None
    if "dw" in by_base:
        lo, hi = by_base["lo"][0], by_base["hi"][0]
        terms = TaskTerms(Dense(by_base["dw"][0], by_base["db"][0]), tuple(int(c) for c in by_base["cols"][0]),
                          tuple(int(c) for c in by_base["tasks"][0]), by_base["mask"][0][0], clip=float(hi))
        assert float(lo) == -float(hi)
    calibration = None
    if "calt" in by_base:
        calibration = Calibration(tuple(int(c) for c in by_base["calt"][0]), by_base["cals"][0] + 1.0, by_base["calo"][0])
    return Heads(layers, v, a, terms=terms, calibration=calibration)
