"""Bench tasks: one `Task` per data set (how a question becomes a prompt, how long an answer
may get, how it is scored, how the ensemble picks among answers), and the rows the bench scores.

The package ships small, licensed subsets (qroute_cli/data/bench, made by bench/make_data.py
from the predictor's bench side of the split, so no row is ever one the predictor trained on):
GSM8K test (MIT), NQ-open dev questions on the bench side (CC BY-SA 3.0), and HANNA's 96
WritingPrompts prompts with human stories (MIT). `--data-dir` points at a folder laid out
like ../shared/data instead (then WritingPrompts uses wp_test_sample70.jsonl).

The code task is HumanEval's bench side (79 of the 164 problems; humaneval.py splits them),
always from the file qroute ships, `--data-dir` or not. An answer scores pass@1: the problem's
tests run against it in the sandbox (sandbox.py). Its item carries the `humaneval.Problem` as
its reference (prompt, entry point, tests), which the matrix never writes out: a cell names
its item by id.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from qroute_cli.errors import UsageError, did_you_mean
from qroute_cli.evaluation import humaneval, metrics
from qroute_cli.jsonl import read_jsonl

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "bench"


@dataclass(frozen=True)
class Task:
    """Everything the bench and the predictor's data generation do differently per data set."""

    name: str
    prompt: Callable[[str], str]  # a question -> the user prompt
    max_tokens: int  # the answer cap the bench and the training data run with
    scores: Callable[[str, Any], dict[str, float]]  # (answer, reference) -> metrics, "quality" in [0, 1] among them
    consensus: Callable[[Mapping[str, str]], str]  # answers by pair -> the pair whose answer the others agree with
    correct_at: float | None = None  # quality from which an answer counts as correct (AUC); None: no such line
    quality_name: str = "quality"  # what `quality` is for this task, as tables label it
    # The question as a user would type it, without the bench's answer-format instruction
    # ("briefly", "in a few words", "under 100 words"): the predictor also learns from answers
    # to these how long an answer runs when nothing in the prompt bounds it.
    user_prompt: Callable[[str], str] | None = None

    def score(self, text: str, reference: Any) -> dict[str, float]:
        """Every automatic score of one answer: `quality` (what the predictor learns) and, where
        the task draws the line, `correct`."""
        out = self.scores(text, reference)
        if self.correct_at is not None:
            out["correct"] = float(out["quality"] >= self.correct_at)
        return out


def template(text: str, *, capitalize: bool = False) -> Callable[[str], str]:
    """A prompt function filling `{q}` with the stripped question (`capitalize`: its first letter)."""
    def prompt(question: str) -> str:
        q = question.strip()
        if capitalize:
            q = q[:1].upper() + q[1:]
        return text.format(q=q)

    return prompt


_DEF = re.compile(r"^def\s+(\w+)\s*\((.*?)\)\s*(?:->\s*[^:]+)?:", re.M | re.S)
_DOC = re.compile(r"(\"\"\"|\'\'\')(.*?)(?:\1|\Z)", re.S)
_DOC_END = re.compile(r"\n\s*\n|>>>|\bfor example\b|\bexamples?\b\s*:?", re.I)


def user_code_prompt(question: str) -> str:
    """A HumanEval problem asked for as a user would: the entry point's name and arguments and
    the first paragraph of its docstring, no code block, no format instruction."""
    defs = list(_DEF.finditer(question))
    if not defs:
        return question.strip()
    last = defs[-1]  # the entry point comes last; helpers before it are given code
    doc = _DOC.search(question, last.end())
    text = " ".join(_DOC_END.split(doc.group(2))[0].split()) if doc else ""
    return f"Write a Python function {last.group(1)}({' '.join(last.group(2).split())}). {text}".strip()


def code_prompt(question: str) -> str:
    """A HumanEval problem's prompt (signature and docstring) -> the user prompt asking for the function."""
    return humaneval.TEMPLATE.format(prompt=question.strip("\n"))


@functools.lru_cache(maxsize=4096)
def _pass_at_1(problem: humaneval.Problem, text: str) -> tuple[tuple[str, float], ...]:
    return tuple(humaneval.score(problem, text).items())


def code_scores(text: str, problem: humaneval.Problem) -> dict[str, float]:
    """pass@1 of one answer in the sandbox: `pass`, `quality`, `correct` (1 or 0). Kept per
    (problem, answer) for the process: the bench scores a cached cell again on every run and
    each capped route's cut answer, and an answer that loops costs its whole timeout each time.
    A sandbox that cannot run raises QrouteError instead of scoring 0."""
    return dict(_pass_at_1(problem, text))


# The prompts are the strings the predictor was trained on (predictor/datagen.py uses these
# tasks). The GSM8K cap was 256 when the committed training data was made; at 256 half of the
# 1.5B's worked solutions were cut before their answer, so the bench now allows 384.
TASKS: dict[str, Task] = {
    "gsm8k": Task(
        "gsm8k", template("{q}\nSolve it step by step, briefly, and end with \"The answer is N.\""), 384,
        metrics.gsm8k_scores, metrics.majority_final_number, correct_at=0.5, quality_name="exact match",
        user_prompt=template("{q}"),
    ),
    "nq": Task(
        # NQ questions come lower-cased and without a question mark.
        "nq", template("{q}?\nAnswer in a few words only.", capitalize=True), 48,
        metrics.nq_scores, metrics.most_agreed(metrics.token_f1), correct_at=0.5, quality_name="F1 / contains",
        user_prompt=template("{q}?", capitalize=True),
    ),
    "wp": Task(
        "wp", template("Write a very short story (under 100 words) for this prompt: {q}"), 128,
        metrics.wp_scores, metrics.most_agreed(metrics.rouge_l), quality_name="ROUGE-L",
        user_prompt=template("Write a story for this prompt: {q}"),
    ),
    # HumanEval: the answer is a whole function; humaneval.MAX_TOKENS says why 640.
    "code": Task(
        "code", code_prompt, humaneval.MAX_TOKENS, code_scores, metrics.most_agreed(metrics.token_f1),
        correct_at=1.0, quality_name="pass@1", user_prompt=user_code_prompt,
    ),
}


def get(name: str) -> Task:
    """The task called `name`; a UsageError naming the closest one when there is none."""
    try:
        return TASKS[name]
    except KeyError:
        raise UsageError(f"Unknown task '{name}'.", did_you_mean(name, list(TASKS))) from None


@dataclass(frozen=True)
class Item:
    task: str  # a name in TASKS
    id: str
    question: str
    reference: Any  # GSM8K: final number; NQ: list of answers; WP: the human story; code: the humaneval.Problem

    @property
    def prompt(self) -> str:
        return TASKS[self.task].prompt(self.question)


def load(task: str, data_dir: Path | None = None) -> list[Item]:
    """Bench rows of a task, in a fixed shuffled order (take a prefix for --limit). Code comes
    from the shipped HumanEval file's bench side whatever `data_dir` says."""
    get(task)
    if task == "code":
        return [Item("code", p.task_id, p.prompt, p) for p in humaneval.load("bench")]
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
