"""Which questions the predictor may train on, and which the bench may score. Never both.

- GSM8K: train.jsonl trains; test.jsonl is for the bench.
- NQ-open: the predictor and the bench share NQ-open dev (3,610 questions), and EVOUNA-NQ
  holds 3,594 of the same questions. Each question goes to one side by a fixed hash of its
  normalised text: `nq_side(q)` is "train" for about 40% and "bench" for the rest. EVOUNA-NQ
  rows are used for training only when their question is on the train side.
  EfficientQA dev is not used by either (kept for a later, independent check).
- WritingPrompts: wp_train_sample500 trains; wp_test_sample70 is for the bench. HANNA's 96
  prompts overlap that test sample (7 prompts), so HANNA is used only to validate metrics,
  never to train.
- HumanEval (code): the 164 problems qroute ships, each on one side by a fixed hash of its
  task id (`humaneval.side`, 85 train, 79 bench). Always read from the shipped file, whatever
  the data folder.

The bench imports this module: `from qroute_cli.evaluation.splits import nq_side, bench_rows`.

`qroute_cli/data/splits/train_questions.sha256.gz` lists a key (`question_key`) for every question
the predictor may train on, so a clone without the source data can still check that no
bench question is a training question. Remake it after a change to the split with
`python -m qroute_cli.evaluation.splits --write-hashes`; a test checks it against the source data.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from qroute_cli.jsonl import read_jsonl

# Bump only with a new data set: changing it moves questions between train and bench.
NQ_SPLIT_SALT = "qroute-nq-split-v1"
NQ_TRAIN_PERCENT = 40

DATASETS = ("gsm8k", "nq", "wp", "code")
TRAIN_HASHES = Path(__file__).resolve().parent.parent / "data" / "splits" / "train_questions.sha256.gz"


def data_root() -> Path:
    """The shared data folder: QROUTE_DATA_DIR, else ../shared/data next to the repo."""
    env = os.environ.get("QROUTE_DATA_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[2]  # the source tree's root
    for cand in (here.parent / "shared" / "data", here / "shared" / "data"):
        if cand.exists():
            return cand
    return here.parent / "shared" / "data"


def normalize_question(q: str) -> str:
    """Lowercase, drop punctuation, collapse spaces: the key a question is split by."""
    q = q.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(q.split())


def nq_side(question: str) -> str:
    """'train' or 'bench' for an NQ question, fixed by a salted SHA-256 of its normalised text."""
    digest = hashlib.sha256((NQ_SPLIT_SALT + normalize_question(question)).encode()).hexdigest()
    return "train" if int(digest[:8], 16) % 100 < NQ_TRAIN_PERCENT else "bench"


@dataclass(frozen=True)
class Row:
    """One source example: `id` is stable across runs (row index or source id)."""

    dataset: str
    id: str
    question: str  # the raw question / writing prompt
    reference: Any  # gsm8k: final number (str); nq: list of answers; wp: human story; code: humaneval.Problem


def gsm8k_final(answer: str) -> str:
    return answer.split("####")[-1].strip().replace(",", "")


def clean_wp_prompt(prompt: str) -> str:
    """Drop [ WP ]-style tags and undo the tokenised spacing of WritingPrompts."""
    text = re.sub(r"\[\s*\w+\s*\]", " ", prompt)
    text = re.sub(r"\s+([.,!?;:'])", r"\1", text)
    text = text.replace("`` ", '"').replace(" ''", '"').replace(" n't", "n't")
    return " ".join(text.split())


# Per side: GSM8K file and id prefix, WritingPrompts file and id prefix. NQ-open dev feeds
# both sides, divided question by question by `nq_side`.
_SOURCES = {
    "train": {"gsm8k": ("train.jsonl", "train"), "wp": ("wp_train_sample500_with_gpt_completions.jsonl", "train")},
    "bench": {"gsm8k": ("test.jsonl", "test"), "wp": ("wp_test_sample70.jsonl", "test")},
}


def _rows(dataset: str, side: str, root: Path | None) -> list[Row]:
    if dataset == "code":
        from qroute_cli.evaluation import humaneval

        return [Row("code", p.task_id, p.prompt, p) for p in humaneval.load(side)]
    root = root or data_root()
    if dataset == "gsm8k":
        file, prefix = _SOURCES[side]["gsm8k"]
        return [
            Row("gsm8k", f"{prefix}-{i}", r["question"], gsm8k_final(r["answer"]))
            for i, r in enumerate(read_jsonl(root / "gsm8k" / file))
        ]
    if dataset == "nq":
        return [
            Row("nq", f"dev-{i}", r["question"], list(r["answer"]))
            for i, r in enumerate(read_jsonl(root / "nq_open" / "NQ-open.dev.jsonl"))
            if nq_side(r["question"]) == side
        ]
    if dataset == "wp":
        file, prefix = _SOURCES[side]["wp"]
        return [
            Row("wp", f"{prefix}-{r['row_id']}", clean_wp_prompt(r["prompt"]), r["story"])
            for r in read_jsonl(root / "writingprompts" / file)
        ]
    raise ValueError(f"unknown dataset {dataset!r}; expected one of {DATASETS}")


def train_rows(dataset: str, root: Path | None = None) -> list[Row]:
    """Rows the predictor may train on, in a fixed order (the data generator takes a prefix)."""
    return _rows(dataset, "train", root)


def bench_rows(dataset: str, root: Path | None = None) -> list[Row]:
    """Rows the bench may score: none of them is ever a training row."""
    return _rows(dataset, "bench", root)


def sample(rows: list[Row], n: int, seed: int = 0) -> list[Row]:
    """A fixed pseudo-random order of `rows`, first `n` (a larger n extends a smaller one)."""
    keyed = sorted(rows, key=lambda r: hashlib.sha256(f"{seed}:{r.dataset}:{r.id}".encode()).hexdigest())
    return keyed[:n]


# --------------------------------------------------------------------------- shipped hashes

def question_key(question: str) -> str:
    """A question's identity whatever its spelling: the first 16 hex digits of the SHA-256 of
    its lower-cased letters and digits (after dropping WritingPrompts tags)."""
    text = re.sub(r"[^0-9a-z]", "", clean_wp_prompt(question).lower())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def training_questions(root: Path | None = None) -> Iterator[tuple[str, str]]:
    """(source, question) for every question the predictor's training may read: the train
    side of each data set (code: a HumanEval problem's prompt), and the EVOUNA questions the
    difficulty head learns from."""
    root = root or data_root()
    for dataset in DATASETS:
        for row in train_rows(dataset, root):
            yield dataset, row.question
    for r in json.loads((root / "human_quality" / "evouna_tq.json").read_text(encoding="utf-8")):
        yield "evouna-tq", r["question"]
    for r in json.loads((root / "human_quality" / "evouna_nq.json").read_text(encoding="utf-8")):
        if nq_side(r["question"]) == "train":
            yield "evouna-nq", r["question"]


def hash_lines(questions: Iterable[tuple[str, str]]) -> list[str]:
    """Sorted, de-duplicated 'source key' lines."""
    return sorted({f"{source} {question_key(q)}" for source, q in questions})


def write_train_hashes(path: Path = TRAIN_HASHES, root: Path | None = None) -> int:
    """Write the shipped hash file from the source data; returns the number of keys."""
    lines = hash_lines(training_questions(root))
    header = ("# Keys of every question the predictor may train on (qroute_cli/evaluation/splits.py question_key).\n"
              "# Made by: python -m qroute_cli.evaluation.splits --write-hashes\n")
    body = (header + "\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body, compresslevel=9, mtime=0))  # same bytes on every rerun
    return len(lines)


def read_train_hashes(path: Path = TRAIN_HASHES) -> dict[str, set[str]]:
    """The shipped keys by source ('gsm8k', 'nq', 'wp', 'code', 'evouna-tq', 'evouna-nq')."""
    out: dict[str, set[str]] = {}
    with gzip.open(path, "rt", encoding="ascii") as fh:
        for line in fh:
            if line.strip() and not line.startswith("#"):
                source, key = line.split()
                out.setdefault(source, set()).add(key)
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-hashes", action="store_true", help=f"write {TRAIN_HASHES.name} from the source data")
    ap.add_argument("--data-dir", type=Path, default=None)
    args = ap.parse_args()
    if args.write_hashes:
        n = write_train_hashes(TRAIN_HASHES, args.data_dir)
        print(f"{TRAIN_HASHES}: {n} keys, {TRAIN_HASHES.stat().st_size / 1024:.0f} KiB")
