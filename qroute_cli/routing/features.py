"""Prompt -> features: the one featurizer shared by predictor training (predictor/) and serving.

Built on `tokenizers` and numpy only (never onnxruntime): the WordPiece tokenizer of
all-MiniLM-L6-v2 turns a prompt into ids, from which we make
- `hashed()`: hashed unigram + bigram counts (log-scaled, L2-normalised) plus a few dense
  shape features (length, digits, lines...) and the prompt's task type as one-hot columns
  (`task_type`, the router's), for the light model;
- `encoder_inputs()`: padded ids and attention mask, for the sentence-encoder model.
Both models also take `dense()`, so they see the same length and shape signals.

The settings that change features live in `FeaturizerConfig`; the trained predictor file
stores them, so serving rebuilds exactly the featurizer it was trained with.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

# Where the shipped predictor and its tokenizer live inside the package.
PREDICTOR_DIR = Path(__file__).resolve().parent.parent / "data" / "predictor"
TOKENIZER_FILE = "tokenizer.json"

# Names of the dense features, in column order (documented so reports can show them).
DENSE_NAMES = (
    "log_tokens",  # log1p(wordpiece tokens) / 7: long prompts -> long answers, more prefill
    "log_chars",  # log1p(characters) / 9
    "digit_frac",  # share of characters that are digits: arithmetic prompts
    "numbers",  # count of numbers / 10, capped at 1: word problems carry several
    "question",  # ends with or contains '?'
    "log_lines",  # log1p(lines) / 4: code and pasted documents have many
    "upper_frac",  # share of uppercase letters
    "code_chars",  # share of {}[]();=<> characters: code
)
N_DENSE = len(DENSE_NAMES)
# Task types, one column each after the dense features: a trained model can then give each
# task its own terms (its own slope on length or difficulty) instead of applying the slope it
# sees across tasks within one task. The router labels runs for its per-task averages with the
# same task_type, so the predictor's task terms and the learned averages agree.
TASK_TYPES = ("math", "qa", "story", "code")
_CODE = re.compile(r"```|\bdef |\bclass |\bfunction\b|\bcode\b|\bpython\b|\bjavascript\b|\bsql\b|[{};]\s*$", re.I | re.M)
_MATH = re.compile(r"\bhow (many|much)\b|\bcalculate\b|\bsolve\b|\btotal\b|\d+\s*[-+*/x%]\s*\d+", re.I)
_STORY = re.compile(r"\bstory\b|\bpoem\b|\btale\b|\bwrite (a|an|me)\b|\bimagine\b", re.I)


def task_type(prompt: str) -> str:
    """A coarse task label (code, math, story, qa); regexes, <0.1 ms."""
    if _CODE.search(prompt):
        return "code"
    if _MATH.search(prompt):
        return "math"
    if _STORY.search(prompt):
        return "story"
    return "qa"

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CODE_CHARS = set("{}[]();=<>")
_MASK32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class FeaturizerConfig:
    """Everything that changes the features; stored in the predictor file's metadata."""

    n_buckets: int = 4096  # hashed n-gram slots; collisions matter little at this data size
    bigrams: bool = True
    max_hash_tokens: int = 1024  # hash the first tokens only: keeps scoring time bounded
    max_len: int = 128  # encoder input length incl. [CLS]/[SEP]; prompts are mostly short
    tasks: bool = True  # append the task-type one-hot columns (TASK_TYPES) to hashed()

    @property
    def n_features(self) -> int:
        """Columns of `Featurizer.hashed()` under this config."""
        return self.n_buckets + N_DENSE + (len(TASK_TYPES) if self.tasks else 0)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "FeaturizerConfig":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        known.setdefault("tasks", False)  # files written before the task columns existed
        return cls(**known)


def _hash(values: np.ndarray, salt: int) -> np.ndarray:
    """A fixed integer hash (no Python hash(): it is salted per process)."""
    x = (values.astype(np.uint64) + np.uint64(salt)) & _MASK32
    x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B) & _MASK32
    x = (x ^ (x >> np.uint64(16))) * np.uint64(0x45D9F3B) & _MASK32
    return x ^ (x >> np.uint64(16))


class Featurizer:
    """Prompt text -> arrays. Load once; every call is pure and deterministic."""

    def __init__(self, tokenizer_path: str | Path | None = None, config: FeaturizerConfig | None = None) -> None:
        from tokenizers import Tokenizer

        self.config = config or FeaturizerConfig()
        self.tokenizer_path = Path(tokenizer_path) if tokenizer_path else PREDICTOR_DIR / TOKENIZER_FILE
        self.tokenizer = Tokenizer.from_file(str(self.tokenizer_path))
        # The shipped tokenizer.json pads and truncates to 128 for sentence-transformers; we
        # want raw ids for hashing and do our own truncation and padding for the encoder.
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        self.cls_id = self.tokenizer.token_to_id("[CLS]")
        self.sep_id = self.tokenizer.token_to_id("[SEP]")
        self.pad_id = self.tokenizer.token_to_id("[PAD]") or 0

    @property
    def n_features(self) -> int:
        return self.config.n_features

    @property
    def dense_start(self) -> int:
        """Column of the first dense feature (log_tokens) in `hashed()`."""
        return self.config.n_buckets

    @property
    def task_start(self) -> int | None:
        """Column of the first task-type one-hot in `hashed()`; None without them."""
        return self.config.n_buckets + N_DENSE if self.config.tasks else None

    def ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """WordPiece ids without special tokens, one list per prompt."""
        encs = self.tokenizer.encode_batch(list(prompts), add_special_tokens=False)
        return [e.ids for e in encs]

    def dense(self, prompts: Sequence[str], ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """Shape features, (n, N_DENSE) float32, each roughly in [0, 1]."""
        ids = self.ids(prompts) if ids is None else ids
        out = np.zeros((len(prompts), N_DENSE), dtype=np.float32)
        for i, (text, toks) in enumerate(zip(prompts, ids)):
            n = max(len(text), 1)
            letters = sum(c.isalpha() for c in text) or 1
            out[i] = (
                np.log1p(len(toks)) / 7.0,
                np.log1p(len(text)) / 9.0,
                sum(c.isdigit() for c in text) / n,
                min(len(_NUMBER.findall(text)) / 10.0, 1.0),
                1.0 if "?" in text else 0.0,
                np.log1p(text.count("\n") + 1) / 4.0,
                sum(c.isupper() for c in text) / letters,
                sum(c in _CODE_CHARS for c in text) / n,
            )
        return out

    def tasks(self, prompts: Sequence[str]) -> np.ndarray:
        """The task type of each prompt as one-hot columns in TASK_TYPES order, (n, 4) float32."""
        out = np.zeros((len(prompts), len(TASK_TYPES)), dtype=np.float32)
        for i, text in enumerate(prompts):
            out[i, TASK_TYPES.index(task_type(text))] = 1.0
        return out

    def hashed(self, prompts: Sequence[str]) -> np.ndarray:
        """Hashed unigram (+ bigram) counts, log1p then L2-normalised, then dense, then the task
        one-hots (with `config.tasks`): (n, n_features)."""
        cfg = self.config
        ids = self.ids(prompts)
        out = np.zeros((len(prompts), self.n_features), dtype=np.float32)
        for i, toks in enumerate(ids):
            t = np.asarray(toks[: cfg.max_hash_tokens], dtype=np.uint64)
            slots = [_hash(t, 1) % np.uint64(cfg.n_buckets)]
            if cfg.bigrams and len(t) > 1:
                pair = t[:-1] * np.uint64(40503) + t[1:]  # ids < 2^15: no overflow, unique pairs
                slots.append(_hash(pair, 2) % np.uint64(cfg.n_buckets))
            if t.size:
                counts = np.bincount(np.concatenate(slots).astype(np.int64), minlength=cfg.n_buckets)
                v = np.log1p(counts.astype(np.float32))
                norm = float(np.linalg.norm(v))
                out[i, : cfg.n_buckets] = v / norm if norm > 0 else v
        out[:, cfg.n_buckets: cfg.n_buckets + N_DENSE] = self.dense(prompts, ids)
        if cfg.tasks:
            out[:, cfg.n_buckets + N_DENSE:] = self.tasks(prompts)
        return out

    def encoder_inputs(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """[CLS] ids [SEP], right-padded to the longest prompt: input_ids and attention_mask (int64)."""
        limit = self.config.max_len - 2
        rows = [[self.cls_id] + toks[:limit] + [self.sep_id] for toks in self.ids(prompts)]
        width = max(len(r) for r in rows) if rows else 2
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, r in enumerate(rows):
            input_ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        return input_ids, mask
