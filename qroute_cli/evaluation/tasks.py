"""Bench tasks: how a data set's question becomes a prompt, and the rows the bench scores.

The package ships small, licensed subsets (qroute_cli/data/bench, made by bench/make_data.py
from the predictor's bench side of the split, so no row is ever one the predictor trained on):
GSM8K test (MIT), NQ-open dev questions on the bench side (CC BY-SA 3.0), and HANNA's 96
WritingPrompts prompts with human stories (MIT). `--data-dir` points at a folder laid out
like ../shared/data instead (then WritingPrompts uses wp_test_sample70.jsonl).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qroute_cli.errors import UsageError
from qroute_cli.jsonl import read_jsonl

TASKS = ("gsm8k", "nq", "wp")
SHIPPED = Path(__file__).resolve().parent.parent / "data" / "bench"


@dataclass(frozen=True)
class TaskFormat:
    """How a question becomes the user prompt, and how long an answer may get."""

    template: str
    max_tokens: int


# The same strings the predictor was trained on (predictor/datagen.py uses these). The GSM8K
# cap was 256 when the committed training data was made; at 256 half of the 1.5B's worked
# solutions were cut before their answer, so the bench now allows 384.
FORMATS = {
    "gsm8k": TaskFormat("{q}\nSolve it step by step, briefly, and end with \"The answer is N.\"", 384),
    "nq": TaskFormat("{q}?\nAnswer in a few words only.", 48),
    "wp": TaskFormat("Write a very short story (under 100 words) for this prompt: {q}", 128),
}


def task_prompt(task: str, question: str) -> str:
    """The user prompt for a data set's question (NQ questions come lower-cased)."""
    q = question.strip()
    if task == "nq":
        q = q[:1].upper() + q[1:]
    return FORMATS[task].template.format(q=q)


@dataclass(frozen=True)
class Item:
    task: str
    id: str
    question: str
    reference: Any  # GSM8K: final number; NQ: list of answers; WP: the human story

    @property
    def prompt(self) -> str:
        return task_prompt(self.task, self.question)


def load(task: str, data_dir: Path | None = None) -> list[Item]:
    """Bench rows of a task, in a fixed shuffled order (take a prefix for --limit)."""
    if task not in TASKS:
        from qroute_cli.errors import did_you_mean

        raise UsageError(f"Unknown task '{task}'.", did_you_mean(task, list(TASKS)))
    if data_dir is None:
        path = SHIPPED / f"{task}.jsonl.gz"
        if not path.exists():
            raise UsageError(f"Bench data {path} is missing.", "Reinstall qroute or pass --data-dir.")
        return [Item(task, r["id"], r["question"], r["reference"]) for r in read_jsonl(path)]
    return _from_data_dir(task, Path(data_dir))


def _from_data_dir(task: str, root: Path) -> list[Item]:
    """A user's copy of the source data sets; the NQ split by question is applied here too."""
    from qroute_cli.evaluation import splits  # the one place the split is defined

    try:
        rows = splits.sample(splits.bench_rows(task, root), 10**9, seed=0)
    except FileNotFoundError as exc:
        raise UsageError(f"{root}: {exc.filename} not found.", "Point --data-dir at a folder laid out like shared/data.")
    return [Item(task, r.id, r.question, r.reference) for r in rows]
