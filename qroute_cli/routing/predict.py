"""The trained predictor at run time: an ONNX file scored with onnxruntime.

The only module that imports onnxruntime, and only when a predictor is loaded, so
`qroute --help` stays fast. The file (built by predictor/train.py) carries its own metadata:
architecture, featurizer settings, and the verifier / acceptance keys of its outputs.
`OnnxScorer.predict()` maps those onto the registry: quality and length per verifier
model, acceptance per pair name. Models and pairs the predictor was not trained on get no
entry ("no opinion"), and the router falls back to the prior for them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from qroute_cli.config import Registry
from qroute_cli.errors import QrouteError
from qroute_cli.routing.features import PREDICTOR_DIR, Featurizer, FeaturizerConfig
from qroute_cli.types import DRAFTER_NONE, Prediction

DEFAULT_FILE = PREDICTOR_DIR / "predictor.onnx"
META_KEY = "qroute_predictor"
_REBUILD = "Reinstall qroute, or rebuild it with: python -m predictor.train (see predictor/README.md)."
# The task type (routing.task_type) of each training data set named in the file's metadata.
DATASET_TASKS = {"gsm8k": "math", "nq": "qa", "wp": "story"}


class PredictorError(QrouteError):
    """The predictor file cannot be used."""

    exit_code = 5


class PredictorMissingError(PredictorError):
    """No predictor file where one was expected."""


class PredictorCorruptError(PredictorError):
    """A predictor file exists but onnxruntime cannot load it or its metadata is wrong."""


def default_path() -> Path:
    """QROUTE_PREDICTOR if set, else the file shipped inside the package."""
    env = os.environ.get("QROUTE_PREDICTOR")
    return Path(env).expanduser() if env else DEFAULT_FILE


class OnnxScorer:
    """Scorer protocol over one predictor file; load once, then `predict` per prompt."""

    def __init__(self, path: Path, registry: Registry | None = None, *, threads: int = 1) -> None:
        self.path = Path(path)
        self.registry = registry
        self.session, self.meta = _open(self.path, threads)
        self.name = str(self.meta.get("name", self.path.stem))
        self.inputs = self.meta.get("inputs", "hashed")
        self.verifiers: list[str] = list(self.meta["verifiers"])
        self.acceptance_keys: list[str] = list(self.meta["acceptance_keys"])
        self.tasks = trained_tasks(self.meta)
        tok = self.path.parent / self.meta.get("tokenizer", "tokenizer.json")
        if not tok.exists():
            raise PredictorMissingError(f"Predictor tokenizer not found: {tok}", _REBUILD)
        try:
            self.featurizer = Featurizer(tok, FeaturizerConfig.from_json(self.meta.get("featurizer", {})))
        except Exception as exc:  # tokenizers raises plain Exceptions on a bad file
            raise PredictorCorruptError(f"Predictor tokenizer {tok} cannot be read: {exc}", _REBUILD) from exc
        self.last_latency_ms = 0.0

    def raw(self, prompts: list[str]) -> dict[str, np.ndarray]:
        """Model outputs for a batch: quality (n, V), acceptance (n, A), length (n, V)."""
        if self.inputs == "encoder":
            ids, mask = self.featurizer.encoder_inputs(prompts)
            feeds = {"input_ids": ids, "attention_mask": mask, "dense": self.featurizer.dense(prompts)}
        else:
            feeds = {"features": self.featurizer.hashed(prompts)}
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(None, feeds)))

    def predict(self, prompt: str) -> Prediction:
        return self.predict_many([prompt])[0]

    def predict_many(self, prompts: list[str]) -> list[Prediction]:
        """One Prediction per prompt, keyed by the registry's model and pair names."""
        t0 = time.perf_counter()
        out = self.raw(list(prompts)) if prompts else {}
        self.last_latency_ms = (time.perf_counter() - t0) * 1000.0
        verifier_col = {v: j for j, v in enumerate(self.verifiers)}
        acc_col = {k: j for j, k in enumerate(self.acceptance_keys)}
        models = list(self.registry.models) if self.registry else self.verifiers
        pairs = (
            [(p.name, p.acceptance_key) for p in self.registry.pairs.values() if p.drafter != DRAFTER_NONE]
            if self.registry
            else [(k, k) for k in self.acceptance_keys]
        )
        preds = []
        for i in range(len(prompts)):
            quality = {m: float(out["quality"][i, verifier_col[m]]) for m in models if m in verifier_col}
            length = {m: float(out["length"][i, verifier_col[m]]) for m in models if m in verifier_col}
            acceptance = {name: float(out["acceptance"][i, acc_col[key]]) for name, key in pairs if key in acc_col}
            preds.append(Prediction(quality=quality, acceptance=acceptance, length=length, scorer=self.name))
        return preds


def trained_tasks(meta: dict) -> frozenset[str] | None:
    """Task types the predictor vouches for, from its metadata; None when it does not say.

    `tasks` names them where the file says (a task with a handful of training prompts is left
    out: the router then treats it as unseen); older files list every data set they saw."""
    if isinstance(meta.get("tasks"), list):
        return frozenset(str(t) for t in meta["tasks"])
    datasets = (meta.get("trained_on") or {}).get("per_dataset")
    if not isinstance(datasets, dict):
        return None
    return frozenset(DATASET_TASKS.get(name, name) for name, n in datasets.items() if n)


def _open(path: Path, threads: int):
    if not path.exists():
        raise PredictorMissingError(f"Predictor file not found: {path}", _REBUILD)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # One thread: a few hundred microseconds of work, and llama.cpp wants the cores.
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail / InvalidProtobuf types
        raise PredictorCorruptError(f"Predictor file {path} cannot be loaded: {str(exc).splitlines()[0][:200]}", _REBUILD) from exc
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    try:
        meta = json.loads(raw) if raw else None
        ok = isinstance(meta, dict) and isinstance(meta.get("verifiers"), list) and isinstance(meta.get("acceptance_keys"), list)
    except json.JSONDecodeError:
        ok = False
    if not ok:
        raise PredictorCorruptError(f"Predictor file {path} has no valid '{META_KEY}' metadata.", _REBUILD)
    outputs = {o.name for o in session.get_outputs()}
    if not {"quality", "acceptance", "length"} <= outputs:
        raise PredictorCorruptError(f"Predictor file {path} lacks the quality/acceptance/length outputs.", _REBUILD)
    return session, meta


def load_default(registry: Registry | None, path: Path | None = None) -> OnnxScorer:
    """The predictor at `path` (default: QROUTE_PREDICTOR or the shipped file); raises PredictorError."""
    return OnnxScorer(path or default_path(), registry)

