"""HumanEval task: the split, answer extraction, pass@1 scoring, and the sandbox's containment
of hostile answers (each one's effect is checked, not only its status)."""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import textwrap
import time
from pathlib import Path

import pytest

from qroute_cli.evaluation import humaneval, sandbox

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="the code sandbox needs a POSIX system")

FAST = sandbox.Limits(timeout_s=1.5)


@pytest.fixture(scope="module")
def problems() -> dict[str, humaneval.Problem]:
    return {p.task_id: p for p in humaneval.load()}


def _body(code: str) -> str:
    """A completion as HumanEval writes one: the function body, indented."""
    return textwrap.indent(textwrap.dedent(code).strip("\n") + "\n", "    ")


def _left_in(folder: str) -> list[int]:
    """Processes still working in `folder` (the sandbox's deleted temporary folder)."""
    if not Path("/proc/self/cwd").exists():
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd").startswith(folder):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _sandbox_folder(outcome: sandbox.Outcome) -> str:
    line = next(ln for ln in outcome.output.splitlines() if ln.startswith("cwd="))
    return line[4:]


# ----------------------------------------------------------------------------- data and split

def test_shipped_file_is_the_human_eval_release():
    digest = hashlib.sha256(humaneval.SHIPPED.read_bytes()).hexdigest()
    assert digest == "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef"
    readme = (humaneval.SHIPPED.parent / "README-humaneval.md").read_text(encoding="utf-8")
    assert digest in readme


def test_split_is_fixed_disjoint_and_about_half():
    everything = humaneval.load()
    train, bench = humaneval.load("train"), humaneval.load("bench")
    train_ids, bench_ids = {p.task_id for p in train}, {p.task_id for p in bench}
    assert len(everything) == 164
    assert not train_ids & bench_ids
    assert train_ids | bench_ids == {p.task_id for p in everything}
    # Pinned: a change here moves problems between the predictor's training and the bench.
    assert (len(train_ids), len(bench_ids)) == (85, 79)
    assert [humaneval.side(f"HumanEval/{i}") for i in range(6)] == [humaneval.side(f"HumanEval/{i}") for i in range(6)]
    assert all(p.side == "train" for p in train) and all(p.side == "bench" for p in bench)
    # A fixed order, so a prefix of the bench is the same prompts on every machine.
    assert [p.task_id for p in humaneval.load("bench")] == [p.task_id for p in bench]
    with pytest.raises(ValueError):
        humaneval.load("test")


def test_chat_prompt_asks_for_the_whole_function(problems):
    text = problems["HumanEval/0"].chat_prompt
    assert "```python" in text and "def has_close_elements(" in text
    assert text.endswith('    """\n```') and text.count("```python") == 2


# ----------------------------------------------------------------------------- extraction

def test_extract_code_from_chat_answers():
    fenced = "Sure!\n```python\ndef f(x):\n    return x + 1\n```\nThis adds one.\n```python\nprint(f(1))\n```"
    assert humaneval.extract_code(fenced, "f") == "def f(x):\n    return x + 1"
    # The block that defines the entry point wins over an earlier helper block.
    two = "```python\nimport math\n```\n```python\ndef g():\n    return 1\n```"
    assert humaneval.extract_code(two, "g").startswith("def g")
    # A fence the token cap cut off still yields its code.
    assert humaneval.extract_code("```python\ndef f():\n    return 2\n", "f") == "def f():\n    return 2"
    # Raw prose before the code is dropped; a __main__ block is dropped.
    raw = "Here is the code:\ndef f():\n    return 3\n\nif __name__ == '__main__':\n    print(input())\nx = 1\n"
    assert humaneval.extract_code(raw, "f") == "def f():\n    return 3\n\nx = 1"


# ----------------------------------------------------------------------------- pass@1

@pytest.mark.parametrize("task_id", ["HumanEval/0", "HumanEval/10", "HumanEval/38"])
def test_canonical_solution_passes_as_body_and_as_chat_answer(problems, task_id):
    p = problems[task_id]  # 10 and 38 have helper functions in the prompt
    assert humaneval.check(p, p.canonical_solution).passed
    chat = f"Here you go:\n```python\n{p.prompt}{p.canonical_solution}\n```\nIt is efficient."
    assert humaneval.score(p, chat) == {"pass": 1.0, "quality": 1.0, "correct": 1.0}


def test_the_bench_code_task_is_human_eval(problems):
    """The bench's `code` task: HumanEval's chat prompt and cap, pass@1 scores with the Problem
    as the reference, and a consensus among answers."""
    from qroute_cli.evaluation.tasks import TASKS

    task = TASKS["code"]
    p = problems["HumanEval/0"]
    assert task.prompt(p.prompt) == p.chat_prompt and task.max_tokens == humaneval.MAX_TOKENS
    right = f"```python\n{p.prompt}{p.canonical_solution}\n```"
    assert task.score(right, p) == {"pass": 1.0, "quality": 1.0, "correct": 1.0}
    assert task.score(_body("return False"), p)["correct"] == 0.0
    assert task.consensus({"a": right, "b": right, "c": "I cannot solve this."}) == "a"


def test_a_sandbox_where_nothing_runs_is_an_error_not_a_failed_answer(problems, monkeypatch):
    """When not even the trivial probe runs, every answer would score 0; scoring raises instead."""
    from qroute_cli.errors import QrouteError

    def dead(source, limits, iso):
        return sandbox.Outcome("failed", "python: not found", "", 0.0)

    sandbox.isolation.cache_clear()
    try:
        monkeypatch.setattr(sandbox, "_run", dead)
        iso = sandbox.isolation()
        assert iso.broken and "python: not found" in iso.describe()
        assert sandbox.run_python("print(1)").status == "error"
        with pytest.raises(QrouteError, match="could not run the tests of HumanEval/0"):
            humaneval.score(problems["HumanEval/0"], problems["HumanEval/0"].canonical_solution)
    finally:
        monkeypatch.undo()
        sandbox.isolation.cache_clear()
    assert not sandbox.isolation().broken


def test_wrong_or_missing_solution_fails(problems):
    p = problems["HumanEval/0"]
    out = humaneval.check(p, _body("return False"))
    assert out.status == "failed" and "AssertionError" in out.reason
    assert humaneval.score(p, "I cannot solve this.")["pass"] == 0.0
    assert humaneval.check(p, "```python\ndef has_close_elements(numbers, threshold)\n```").status == "failed"


def test_exiting_before_the_tests_finish_does_not_pass(problems):
    p = problems["HumanEval/0"]
    assert not humaneval.check(p, "import sys\nsys.exit(0)\n").passed
    assert not humaneval.check(p, _body("import os\nos._exit(0)")).passed


# ----------------------------------------------------------------------------- containment

def test_infinite_loop_times_out_and_leaves_no_process(problems):
    p = problems["HumanEval/0"]
    start = time.monotonic()
    out = humaneval.check(p, _body("import os\nprint('cwd=' + os.getcwd(), flush=True)\nwhile True:\n    pass"), FAST)
    assert out.status == "timeout"
    assert time.monotonic() - start < FAST.timeout_s + 3
    folder = _sandbox_folder(out)
    assert not Path(folder).exists()
    assert _left_in(folder) == []


def test_fork_bomb_is_contained(problems):
    p = problems["HumanEval/0"]
    bomb = """
    import os
    print('cwd=' + os.getcwd(), flush=True)
    for spawn in (lambda: os.fork(), lambda: os.system('sleep 30 &'),
                  lambda: __import__('subprocess').Popen(['sleep', '30']),
                  lambda: __import__('multiprocessing').Process(target=print).start(),
                  lambda: os.posix_spawn('/bin/sleep', ['sleep', '30'], {})):
        try:
            spawn()
            print('spawned', flush=True)
        except BaseException as exc:
            print('refused', type(exc).__name__, flush=True)
    while True:
        try:
            os.fork()
        except BaseException:
            pass
    """
    start = time.monotonic()
    out = humaneval.check(p, _body(bomb), FAST)
    assert out.status == "timeout"
    assert time.monotonic() - start < FAST.timeout_s + 3
    assert "spawned" not in out.output and out.output.count("refused") == 5
    assert _left_in(_sandbox_folder(out)) == []


def test_memory_hog_fails_quickly(problems):
    p = problems["HumanEval/0"]
    start = time.monotonic()
    out = humaneval.check(p, _body("x = bytearray(4 * 1024 ** 3)\nreturn x"))
    assert out.status == "failed" and "MemoryError" in out.reason
    # Growing step by step stops at the address-space limit (small here to stay quick).
    small = sandbox.Limits(timeout_s=10.0, memory_mb=128)
    out = humaneval.check(p, _body("hog = []\nwhile True:\n    hog.append(' ' * 2 ** 20)"), small)
    assert out.status == "failed" and "MemoryError" in out.reason
    assert time.monotonic() - start < 15


def test_flood_of_output_is_cut():
    out = sandbox.run_python("print('x' * 10 ** 7)\nprint('end')", sandbox.Limits(max_output=1000))
    assert out.passed and len(out.output) < 1100 and out.output.endswith("end\n") and "bytes cut" in out.output


def test_cannot_write_or_delete_outside_its_folder(problems, tmp_path):
    p = problems["HumanEval/0"]
    victim = tmp_path / "victim"
    victim.mkdir()
    sentinel = victim / "sentinel.txt"
    sentinel.write_text("keep me")
    target = victim / "created.txt"
    attack = f"""
    import os, shutil, pathlib
    attempts = [
        lambda: os.remove({str(sentinel)!r}),
        lambda: os.rename({str(sentinel)!r}, {str(victim / "moved.txt")!r}),
        lambda: open({str(sentinel)!r}, "w").write("gone"),
        lambda: open({str(target)!r}, "w").write("written"),
        lambda: os.open({str(target)!r}, os.O_CREAT | os.O_WRONLY),
        lambda: pathlib.Path({str(target)!r}).write_text("written"),
        lambda: shutil.rmtree({str(victim)!r}),
        lambda: os.symlink({str(sentinel)!r}, "link"),
        lambda: os.chmod({str(sentinel)!r}, 0),
        lambda: open("../" * 40 + {str(target)[1:]!r}, "w").write("written"),
    ]
    for attempt in attempts:
        try:
            attempt()
            print("done", flush=True)
        except BaseException as exc:
            print("refused", type(exc).__name__, flush=True)
    open("inside.txt", "w").write("fine")  # its own folder is writable
    print("inside", open("inside.txt").read(), flush=True)
    """
    out = humaneval.check(p, _body(attack))
    assert "done" not in out.output and out.output.count("refused") == 10
    assert "inside fine" in out.output
    assert sentinel.read_text() == "keep me"
    assert sorted(f.name for f in victim.iterdir()) == ["sentinel.txt"]
    assert os.stat(sentinel).st_mode & 0o777 != 0


def test_cannot_connect_to_the_network(problems):
    p = problems["HumanEval/0"]
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    port = server.getsockname()[1]
    attack = f"""
    try:
        import socket
        socket.create_connection(("127.0.0.1", {port}), timeout=1).sendall(b"leak")
        print("connected", flush=True)
    except BaseException as exc:
        print("refused", type(exc).__name__, flush=True)
    """
    try:
        out = humaneval.check(p, _body(attack))
        assert "connected" not in out.output and "refused" in out.output
        with pytest.raises(socket.timeout):
            server.accept()
    finally:
        server.close()


def test_home_shows_nothing_of_the_user(problems, tmp_path, monkeypatch):
    p = problems["HumanEval/0"]
    home = tmp_path / "home"
    home.mkdir()
    secret = "secret-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:12]
    (home / ".netrc").write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    attack = f"""
    import os
    print("home=" + os.path.expanduser("~"), flush=True)
    for path in (os.path.expanduser("~/.netrc"), {str(home / ".netrc")!r}):
        try:
            print("read", open(path).read(), flush=True)
        except BaseException as exc:
            print("refused", type(exc).__name__, flush=True)
    try:
        print("list", os.listdir({str(home)!r}), flush=True)
    except BaseException as exc:
        print("refused", type(exc).__name__, flush=True)
    """
    out = humaneval.check(p, _body(attack))
    assert secret not in out.output
    assert "home=" in out.output and f"home={home}" not in out.output
    assert out.output.count("refused") == 3
