"""How `qroute run` (and `qroute score`) read stdin: plain lines, JSON Lines, or both (auto),
and how one bad line is reported without losing the rest of the batch."""

from __future__ import annotations

import io
import json

import pytest

from conftest import qroute
from qroute_cli.inputs import PromptLine, read_prompts


def prompts(data: bytes, mode: str = "auto") -> list[PromptLine]:
    return list(read_prompts(io.BytesIO(data), mode))


def test_auto_mode_takes_json_objects_and_plain_lines():
    got = prompts(b'first\n{"prompt": "second", "system": "Be brief."}\n\n{x | x > 0} is a set\n')
    assert [(p.line, p.prompt, p.system) for p in got] == [
        (1, "first", None), (2, "second", "Be brief."), (4, "{x | x > 0} is a set", None)]
    assert all(p.error is None for p in got)


def test_auto_mode_reports_a_broken_json_line_and_reads_on():
    got = prompts(b'{"prompt": "a",}\n{"prompt": 3}\n{"prompt": "b", "system": 7}\n'
                  b'{"prompt": "c", "system": ["x"]}\n{}\nlast\n')
    assert [p.line for p in got if p.error] == [1, 2, 3, 4, 5]
    assert "invalid JSON" in got[0].error.message
    assert "'prompt'" in got[1].error.message and "--lines" in got[1].error.hint
    assert "'system' must be a string, got int" in got[2].error.message
    assert "got list" in got[3].error.message
    assert got[5].prompt == "last" and got[5].error is None


def test_lines_and_jsonl_modes():
    data = b'{"prompt": "x"}\nplain\n'
    assert [p.prompt for p in prompts(data, "lines")] == ['{"prompt": "x"}', "plain"]
    strict = prompts(data, "jsonl")
    assert strict[0].prompt == "x" and strict[1].error is not None and strict[1].line == 2


def test_bytes_that_are_not_utf8_a_bom_and_crlf():
    got = prompts(b"\xef\xbb\xbfone\r\ncaf\xe9\r\n{\"prompt\": \"\\ud800\"}\nthree\n")
    assert got[0].prompt == "one" and got[3].prompt == "three"
    assert "stdin line 2 is not valid UTF-8" in got[1].error.message
    assert "not valid UTF-8" in got[2].error.message  # a lone surrogate escaped in JSON


@pytest.fixture(autouse=True)
def only_fakes(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


def test_one_bad_line_does_not_lose_the_batch():
    stdin = 'first\n{"prompt": "second",}\n{"prompt": "third", "system": 3}\n{plain braces}\nlast\n'
    r = qroute("run", "--pair", "fake-big", "--json", "-n", "5", input=stdin)
    assert r.returncode == 2, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["prompt"] for row in rows] == ["first", None, None, "{plain braces}", "last"]
    assert [row.get("line") for row in rows if "error" in row] == [2, 3]
    assert all(row["text"] for row in rows if "error" not in row)
    assert "stdin line 2" in r.stderr and "stdin line 3" in r.stderr and "Traceback" not in r.stderr


def test_lines_mode_sends_json_looking_lines_as_prompts():
    r = qroute("run", "--pair", "fake-big", "--json", "-n", "5", "--lines", input='{"prompt": "x"}\n')
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["prompt"] == '{"prompt": "x"}'


def test_jsonl_mode_rejects_plain_lines_and_goes_on():
    r = qroute("run", "--pair", "fake-big", "--json", "-n", "5", "--jsonl", input='plain\n{"prompt": "x"}\n')
    assert r.returncode == 2
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0]["line"] == 1 and "invalid JSON" in rows[0]["error"] and rows[1]["prompt"] == "x"


def test_input_mode_flags_are_checked():
    r = qroute("run", "--lines", "--jsonl", input="x\n")
    assert r.returncode == 2 and "Choose one of --lines and --jsonl" in r.stderr
    r = qroute("run", "hi", "--lines")
    assert r.returncode == 2 and "do not go with a prompt argument" in r.stderr


def test_plain_output_reports_the_bad_line_and_answers_the_rest():
    r = qroute("-q", "run", "--pair", "fake-big", "-n", "5", input='one\n{"prompt": 1}\ntwo\n')
    assert r.returncode == 2
    both = qroute("-q", "run", "--pair", "fake-big", "-n", "5", input="one\ntwo\n")
    assert r.stdout == both.stdout  # the answers to the good lines, as if the bad one were not there
    assert "stdin line 2" in r.stderr
