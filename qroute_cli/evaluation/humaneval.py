"""HumanEval (OpenAI, 164 Python problems, MIT) as a bench and training task, scored by pass@1.

How pass@1 is scored here
-------------------------
Each problem gets one answer (the bench decodes greedily, temperature 0), so pass@1 is the
share of problems whose answer passes all of the problem's tests: the estimator of Chen et
al. (2021) with n = k = 1. One answer is scored in four steps:

1. `chat_prompt` asks an instruct model for the complete function in one ```python block.
2. `extract_code` takes the code out of the answer: the fenced block that defines the entry
   point (else the first block; an unclosed fence, cut by the token cap, counts up to its
   end), else the raw answer from its first line of code. `if __name__ == "__main__":`
   blocks are dropped, since the program runs as __main__ and stdin is closed.
3. `program` builds what HumanEval runs: the problem's prompt (its imports, helper functions
   and the entry point's signature and docstring, which compile on their own), then the
   answer: a complete `def <entry_point>` replaces the prompt's, a bare body is indented under
   the prompt's signature, as HumanEval's own completions are. Then the problem's `test`
   and `check(<entry_point>)`.
4. `check` runs it in `sandbox.run_python` (separate process, 10 s wall and CPU limit, 1 GiB
   of address space, temporary folder, no network, no files outside the folder). It passes
   when the program runs to its end.

A timeout, a crash, a syntax error, an answer with no code, an early `exit()` and anything
the sandbox refuses count as a failure (0). A sandbox that cannot run at all (no POSIX
system, or not even a trivial program runs in it) raises QrouteError instead of scoring 0
for every answer.

The split
---------
`side(task_id)` puts each problem on the predictor's training side or the bench side by a
salted SHA-256 of its task id (half each), as `qroute_cli.evaluation.splits.nq_side` splits NQ: the
predictor's data generation takes the "train" side, the bench scores only the "bench" side.
The data file ships all 164 problems unchanged (see qroute_cli/data/bench/README-humaneval.md);
`load(side)` filters them.
"""

from __future__ import annotations

import hashlib
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from qroute_cli.errors import QrouteError
from qroute_cli.evaluation import sandbox
from qroute_cli.jsonl import read_jsonl

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "bench" / "humaneval.jsonl.gz"

# Bump only with a new data set: changing it moves problems between train and bench.
SPLIT_SALT = "qroute-humaneval-split-v1"
TRAIN_PERCENT = 50
SIDES = ("train", "bench")

# An answer is usually the whole function, docstring included. The prompt plus the canonical
# body, as one function, is 167 Qwen2.5 tokens at the median, 364 at p95 and 557 at most, and
# the fence adds a few: 640 leaves room without letting a rambling answer run for minutes.
MAX_TOKENS = 640
TEMPLATE = (
    "Complete this Python function. Reply with the complete function, signature included, "
    "in one ```python code block, without examples or tests.\n\n```python\n{prompt}\n```"
)


@dataclass(frozen=True)
class Problem:
    """One HumanEval problem, with the fields of HumanEval.jsonl.gz."""

    task_id: str  # "HumanEval/0"
    prompt: str  # imports, helpers, the entry point's signature and docstring
    entry_point: str  # name of the function under test
    canonical_solution: str  # the reference body
    test: str  # defines check(candidate)

    @property
    def side(self) -> str:
        return side(self.task_id)

    @property
    def chat_prompt(self) -> str:
        return chat_prompt(self)


def side(task_id: str) -> str:
    """'train' or 'bench' for a HumanEval task id, fixed by a salted SHA-256 of the id."""
    digest = hashlib.sha256((SPLIT_SALT + task_id).encode()).hexdigest()
    return "train" if int(digest[:8], 16) % 100 < TRAIN_PERCENT else "bench"


def load(which: str | None = None, path: Path = SHIPPED) -> list[Problem]:
    """Problems of one side ('train' or 'bench'; None: all 164), in a fixed shuffled order
    (take a prefix for a smaller run; a longer prefix extends a shorter one)."""
    if which is not None and which not in SIDES:
        raise ValueError(f"unknown side {which!r}; expected one of {SIDES}")
    rows = read_jsonl(path)
    problems = [
        Problem(r["task_id"], r["prompt"], r["entry_point"], r["canonical_solution"], r["test"])
        for r in rows
        if which is None or side(r["task_id"]) == which
    ]
    return sorted(problems, key=lambda p: hashlib.sha256(f"0:humaneval:{p.task_id}".encode()).hexdigest())


def chat_prompt(problem: Problem) -> str:
    """The user message for an instruct (coder) model."""
    return TEMPLATE.format(prompt=problem.prompt.strip("\n"))


_FENCE = re.compile(r"```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_CODE_START = re.compile(r"^(?:def |class |import |from |@|async def )", re.MULTILINE)
_MAIN_GUARD = re.compile(r"""^if\s+__name__\s*==\s*['"]__main__['"]\s*:""")


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}[ \t]*\(", code, re.MULTILINE) is not None


def _drop_main_guard(code: str) -> str:
    """Remove top-level `if __name__ == "__main__":` blocks (demo code, input() calls)."""
    out, skipping = [], False
    for line in code.splitlines():
        if _MAIN_GUARD.match(line):
            skipping = True
            continue
        if skipping and (not line.strip() or line[:1] in (" ", "\t")):
            continue
        skipping = False
        out.append(line)
    return "\n".join(out)


def extract_code(answer: str, entry_point: str | None = None) -> str:
    """The code in a model's answer: the fenced block that defines `entry_point`, else the
    first non-empty Python block, else the answer itself from its first line of code."""
    blocks = [body for lang, body in _FENCE.findall(answer) if lang.lower() in ("", "python", "py", "python3") and body.strip()]
    if blocks:
        code = next((b for b in blocks if entry_point and _defines(b, entry_point)), blocks[0])
    else:
        code = answer
        start = _CODE_START.search(code)
        if start is not None and start.start() > 0 and not _compiles(code):
            code = code[start.start():]
    return _drop_main_guard(code).strip("\n")


def _compiles(code: str) -> bool:
    try:
        compile(code, "<answer>", "exec")
    except (SyntaxError, ValueError):
        return False
    return True


def program(problem: Problem, answer: str) -> str:
    """The program that runs the problem's tests against an answer (see the module docstring)."""
    code = extract_code(answer, problem.entry_point)
    if _defines(code, problem.entry_point):
        body = textwrap.dedent(code)  # a complete function replaces the prompt's
        head = problem.prompt
        if not head.endswith("\n"):
            head += "\n"
        solution = head + "\n\n" + body
    else:
        lines = code.splitlines()
        first = next((ln for ln in lines if ln.strip()), "")
        if first and not first[:1].isspace():  # a body written at column 0
            code = textwrap.indent(code, "    ")
        solution = problem.prompt + code
    return f"{solution}\n\n\n{problem.test}\n\ncheck({problem.entry_point})\n"


def check(problem: Problem, answer: str, limits: sandbox.Limits = sandbox.Limits()) -> sandbox.Outcome:
    """Run the problem's tests against `answer` in the sandbox."""
    return sandbox.run_python(program(problem, answer), limits)


def score(problem: Problem, answer: str, limits: sandbox.Limits = sandbox.Limits()) -> dict[str, float]:
    """pass@1 of one answer as the bench's metrics report it: `pass`, `quality`, `correct`."""
    outcome = check(problem, answer, limits)
    if outcome.status == "error":
        raise QrouteError(f"The code sandbox could not run the tests of {problem.task_id}: {outcome.reason}.",
                          "This is not a failed answer: the code task needs Linux or macOS with the standard "
                          "Python interpreter (`qroute bench --tasks gsm8k,nq,wp` leaves code out).")
    passed = float(outcome.passed)
    return {"pass": passed, "quality": passed, "correct": passed}
