"""`qroute chat` as a user drives it: a real pseudo-terminal (pexpect) and smollm2-135m.

Type a message and see the answer, use slash commands, switch pairs, save, interrupt a long
answer with Ctrl-C, clear a line with Ctrl-C, leave with Ctrl-D. Timeouts are generous: the
test machines are shared and slow.
"""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from conftest import FAKE_CONFIG, ROOT, default_sigint, require_model

pexpect = pytest.importorskip("pexpect")

E = r"(?:\x1b\[[0-9;]*m)*"  # colour codes between the parts of a line
PROMPT = rf"you{E}>"  # "[pair] you> "


def status(pair: str) -> str:
    """The status line after an answer: 'PAIR · N tok · …'."""
    return rf"{re.escape(pair)}{E} · {E}\d+ tok"
T = 120  # seconds: one short answer on a busy 2-core machine, with room to spare


def spawn(*args: str, config=None):
    env = dict(os.environ, TERM="xterm-256color", COLUMNS="120", LINES="40",
               PROMPT_TOOLKIT_NO_CPR="1")  # the test terminal does not answer cursor-position requests
    cmd = ["-m", "qroute_cli"] + (["--config", str(config)] if config else []) + list(args)
    child = pexpect.spawn(sys.executable, cmd, env=env, cwd=str(ROOT), dimensions=(40, 120),
                          encoding="utf-8", codec_errors="replace", timeout=T, preexec_fn=default_sigint)
    return child


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def command(child, line: str, expect: str) -> str:
    """Type a slash command at the prompt and wait for its output and the next prompt."""
    child.sendline(line)
    child.expect(expect)
    out = child.before + child.after
    child.expect(PROMPT)
    return out


def test_fake_chat_in_a_terminal_ctrl_c_clears_the_line_and_ctrl_d_leaves(qroute_home, monkeypatch):
    monkeypatch.setenv("QROUTE_LOG_PROMPTS", "1")  # typed lines are kept only with prompt logging on
    child = spawn("chat", "--pair", "fake-big", "-n", "16", config=FAKE_CONFIG)
    try:
        child.expect("/help for commands")
        child.expect(PROMPT)
        child.sendline("hello")
        child.expect(status("fake-big"))
        child.expect(PROMPT)
        child.send("half a thought")
        child.expect("thought")
        child.sendintr()  # Ctrl-C at the prompt: the line is cleared, the chat goes on
        child.expect(PROMPT)
        command(child, "/budget 3s", "Budget: 3s per turn")
        child.send("\x04")  # Ctrl-D
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    history_file = qroute_home / "data" / "chat_history"
    assert history_file.stat().st_mode & 0o777 == 0o600
    history = history_file.read_text()
    assert "hello" in history and "/budget 3s" in history and "half a thought" not in history


@pytest.mark.real
def test_real_chat_answer_commands_interrupt_and_exit(tmp_path, qroute_home):
    require_model("smollm2-135m")
    child = spawn("chat", "--pair", "smollm2-135m", "-n", "16", "--threads", "1")
    try:
        child.expect(PROMPT)
        child.sendline("What is the capital of France?")
        child.expect(status("smollm2-135m"))  # the status line after the streamed answer
        child.expect(PROMPT)
        answer = strip_ansi(child.before)
        assert re.search(r"[A-Za-z]{3}", answer)

        out = command(child, "/help", r"/exit\s+leave")
        assert "/pair NAME|auto" in out and "/save FILE" in out
        command(child, "/budget 3s", "Budget: 3s per turn")
        command(child, "/pair smollm2-13", r"Did you mean 'smollm2-135m'")
        command(child, "/pair smollm2-135m+ngram", "Pair: smollm2-135m\\+ngram for every turn")

        # Same verifier, new drafter: turn 2 reuses turn 1 from the KV cache.
        child.sendline("And of Italy?")
        child.expect(status("smollm2-135m+ngram") + r".*?cache (\d+)/(\d+) prompt tok")
        assert int(child.match.group(1)) > 0
        assert "3s budget" in strip_ansi(child.match.group(0))
        child.expect(PROMPT)

        out = strip_ansi(command(child, "/explain", r"Route \(forced, budget 3s\)"))
        assert "smollm2-135m+ngram" in out
        command(child, "/stats", "This chat")
        saved = tmp_path / "chat.json"
        command(child, f"/save {saved}", "Saved 2 turns")
        data = json.loads(saved.read_text())
        assert [m["content"] for m in data["messages"] if m["role"] == "user"] == [
            "What is the capital of France?", "And of Italy?"]
        assert data["turns"][1]["pair"] == "smollm2-135m+ngram"

        # Ctrl-C during a long answer stops it and returns to the prompt.
        command(child, "/max-tokens 1000", "Max tokens: 1000")
        child.sendline("Write a very long story about a dragon who learns to bake bread.")
        # The echoed line; the answer starts below it. A busy machine can leave the line drawn
        # twice, the last time with a cursor move between its end and the newline.
        child.expect(r"bread\.(?:\x1b\[[0-9;?]*[A-Za-z]|\r)*\n")
        child.expect(r"[A-Za-z]{2}")  # the first words stream in
        child.sendintr()
        child.expect("nterrupted")
        child.expect(PROMPT)
        command(child, "/save " + str(tmp_path / "after.json"), "Saved")
        turns = json.loads((tmp_path / "after.json").read_text())["turns"]
        assert len(turns) in (2, 3)  # 3: the partial answer is kept; 2: stopped before its first token
        if len(turns) == 3:
            assert turns[2]["finish_reason"] == "interrupted"

        command(child, "/max-tokens 8", "Max tokens: 8")
        child.sendline("Thanks!")  # the chat still answers after an interrupt
        child.expect(status("smollm2-135m+ngram"))
        child.expect(PROMPT)
        child.send("\x04")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
