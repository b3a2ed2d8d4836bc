"""`qroute chat` without a terminal: commands, history, trimming, interrupts, KV reuse, stdin mode.

Everything runs on the fake backend through the real router and engine.
"""

from __future__ import annotations

import json

import pytest

from conftest import FAKE_CONFIG, Screen, make_chat, qroute
from qroute_cli.chat import (
    SLASH_COMMANDS, Chat, Command, History, Turn, help_text, looks_like_markdown, message_text, parse_command,
    screen_rows,
)
from qroute_cli.errors import UsageError


@pytest.fixture(autouse=True)
def only_fakes(tmp_path, monkeypatch):
    """Hide the real model files so routing weighs the fake pairs only."""
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "no-models"))


# -- pure pieces ---------------------------------------------------------------------------


def test_parse_command_and_messages():
    assert parse_command("hello /budget") is None
    assert parse_command("  /budget 3s ") == Command("budget", "3s")
    assert parse_command("/PAIR auto") == Command("pair", "auto")
    assert parse_command("/quit") == Command("exit")
    assert parse_command("/save my chat.md") == Command("save", "my chat.md")
    assert parse_command("//etc/hosts is a file") is None
    assert message_text("//etc/hosts is a file") == "/etc/hosts is a file"
    with pytest.raises(UsageError) as exc:
        parse_command("/bugdet 3s")
    assert "Did you mean 'budget'" in exc.value.message and "/help" in exc.value.hint


def test_help_is_drawn_from_the_command_table():
    text = help_text()
    listed = [line.split()[0] for line in text.splitlines()[1:len(SLASH_COMMANDS) + 1]]
    assert listed == [f"/{name}" for name in SLASH_COMMANDS]  # every command, in the table's order
    width = max(len(cmd.usage) for cmd in SLASH_COMMANDS.values())
    for cmd in SLASH_COMMANDS.values():
        assert f"  {cmd.usage.ljust(width)}  {cmd.help}\n" in text
        assert parse_command(f"/{cmd.name}") == Command(cmd.name)


def test_history_messages_drop_and_save(tmp_path):
    h = History(system="Be brief.")
    h.add(Turn("q1", "a1", "fake-big"))
    h.add(Turn("q2", "a2", "fake-big", finish="interrupted"))
    assert [(m.role, m.content) for m in h.messages("q3")] == [
        ("system", "Be brief."), ("user", "q1"), ("assistant", "a1"), ("user", "q2"), ("assistant", "a2"),
        ("user", "q3")]
    assert h.drop_oldest() and [m.content for m in h.messages()] == ["Be brief.", "q2", "a2"]
    assert h.drop_oldest() and not h.drop_oldest()
    assert [m.role for m in h.messages("x")] == ["system", "user"]  # the system message stays

    assert h.save(tmp_path / "c.json") == "json"
    data = json.loads((tmp_path / "c.json").read_text())
    assert [m["content"] for m in data["messages"]] == ["Be brief.", "q1", "a1", "q2", "a2"]  # all turns kept
    assert [t["in_context"] for t in data["turns"]] == [False, False]
    assert data["turns"][1]["finish_reason"] == "interrupted"
    assert h.save(tmp_path / "sub" / "c.md") == "markdown"
    md = (tmp_path / "sub" / "c.md").read_text()
    assert "## You\n\nq1" in md and "interrupted" in md and "Be brief." in md


def test_markdown_detection_and_screen_rows():
    assert looks_like_markdown("Here:\n```python\nprint(1)\n```")
    assert looks_like_markdown("- one\n- two") and looks_like_markdown("Use **bold** here")
    assert not looks_like_markdown("Just a plain sentence. 3 * 4 = 12.")
    assert screen_rows("abc", 80) == 1
    assert screen_rows("abc\n", 80) == 1  # the trailing newline ends the last row
    assert screen_rows("x" * 80, 80) == 1 and screen_rows("x" * 81, 80) == 2
    assert screen_rows("a\n\nb", 80) == 3


# -- turns on the fake backend ---------------------------------------------------------------


def test_turns_stream_reuse_the_cache_and_switch_pairs(fake_pool):
    chat, screen = make_chat(fake_pool)
    first = chat.ask("hello there")
    assert first.text and screen.answer.startswith(first.text)  # streamed to stdout
    assert first.stats.prompt_cached == 0
    second = chat.ask("and again")
    # Turn 2 finds turn 1 (prompt + answer) in the verifier's KV cache.
    assert second.stats.prompt_cached >= first.stats.prompt_tokens + first.stats.output_tokens - 1
    assert "cache" in screen.err and "fake-big" in screen.err and "tok/s" in screen.err

    assert chat.handle("/pair fake-big+small")
    third = chat.ask("third")
    assert third.pair == "fake-big+small" and third.stats.drafted > 0
    assert third.stats.prompt_cached > second.stats.prompt_tokens  # same verifier: the cache still counts
    assert [t.pair for t in chat.history.turns] == ["fake-big", "fake-big", "fake-big+small"]
    fourth = chat.ask("fourth")  # a different verifier: the whole conversation is its prompt
    assert fourth.pair == "fake-big+small"
    chat.handle("/pair fake-other")
    assert chat.ask("fifth").pair == "fake-other"


def test_auto_routing_and_explain(fake_pool):
    chat, screen = make_chat(fake_pool, pair=None)
    chat.handle("/explain")
    assert "No turn has been routed yet" in screen.err
    gen = chat.ask("hello")
    assert gen.pair in fake_pool.registry.pairs and chat.last_decision.chosen == gen.pair
    chat.handle("/explain")
    assert "Route (quality, budget 5s)" in screen.err and "fake-big+small" in screen.err
    chat.handle("/strategy cost")
    chat.handle("/budget 800ms")
    assert chat.router.strategy == "cost" and chat.router.budget_s == 0.8
    chat.ask("again")
    assert chat.last_decision.strategy == "cost" and chat.last_decision.budget_s == 0.8
    chat.handle("/strategy static:fake-small")
    assert chat.ask("static").pair == "fake-small"


def test_commands_change_settings_and_bad_input_is_a_message(fake_pool, tmp_path):
    chat, screen = make_chat(fake_pool)
    assert chat.handle("/pair fake-bigg") and chat.forced_pair == "fake-big"
    assert "Did you mean 'fake-big'" in screen.err
    chat.handle("/budget -3s")
    chat.handle("/strategy fastest")
    chat.handle("/max-tokens lots")
    chat.handle("/frobnicate")
    assert chat.worst_exit == 2 and chat.router.budget_s == 5.0 and chat.router.strategy == "quality"
    assert "Traceback" not in screen.err

    chat.handle("/system You are terse.")
    chat.handle("/max-tokens 7")
    gen = chat.ask("hi")
    assert chat.history.messages()[0].content == "You are terse." and gen.stats.output_tokens <= 7
    chat.handle("/stats")
    assert "This chat" in screen.err
    chat.handle(f"/save {tmp_path / 'chat.json'}")
    assert json.loads((tmp_path / "chat.json").read_text())["system"] == "You are terse."
    chat.handle("/system Use [/b] and [bold]")  # user text is never read as Rich markup
    chat.handle("/system")
    chat.handle("/[/x]")
    assert "System: Use [/b] and [bold]" in screen.err and "Unknown command '/[/x]'" in screen.err
    chat.handle("/system off")
    chat.handle("/reset")
    assert chat.history.messages() == [] and chat.history.turns == []
    chat.handle("/help")
    assert "/pair NAME|auto" in screen.err and "/exit" in screen.err
    assert chat.handle("/exit") is False and chat.handle("/q") is False


def test_interrupted_answer_is_kept_with_its_partial_text(fake_pool):
    screen = Screen()
    pieces = []

    def write(text: str) -> None:
        pieces.append(text)
        if len("".join(pieces)) >= 5 and "stop" not in pieces:
            pieces.append("stop")
            raise KeyboardInterrupt  # Ctrl-C while the answer streams

    screen.view._write_raw = write
    chat, _ = make_chat(fake_pool, screen=screen, max_tokens=200)
    gen = chat.ask("tell me a long story")
    assert gen.finish_reason == "interrupted" and chat.interrupted
    assert chat.history.turns[-1].assistant == gen.text and gen.text.startswith("".join(pieces[:-2])[:5])
    assert chat.history.turns[-1].finish == "interrupted"
    screen.view._write_raw = screen.write
    nxt = chat.ask("go on")  # the next turn works and still reuses the cache
    assert nxt.finish_reason != "interrupted" and nxt.stats.prompt_cached > 0
    assert "interrupted" in screen.err


def test_interrupt_before_the_first_token_drops_the_question(fake_pool, monkeypatch):
    chat, screen = make_chat(fake_pool)
    chat.ask("one")
    backend = fake_pool.get("fake-big")
    real_eval = backend.eval

    def eval_once(tokens, logits="last"):
        monkeypatch.setattr(backend, "eval", real_eval)
        raise KeyboardInterrupt

    monkeypatch.setattr(backend, "eval", eval_once)
    gen = chat.ask("two")
    assert gen.finish_reason == "interrupted" and gen.text == ""
    assert [t.user for t in chat.history.turns] == ["one"]
    assert "question was dropped" in screen.err
    assert chat.ask("three").text


def test_interrupt_while_routing_returns_to_the_prompt(fake_pool, monkeypatch):
    chat, screen = make_chat(fake_pool)

    def stuck(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(chat.router, "decide", stuck)
    assert chat.handle("hello") is True and chat.history.turns == []
    assert "Interrupted." in screen.err


@pytest.fixture
def tiny_pool(tmp_path):
    """A fake model with a 256-token context: a few turns fill it."""
    from qroute_cli.config import load_registry
    from qroute_cli.generation.pool import ModelPool

    cfg = tmp_path / "tiny.toml"
    cfg.write_text(FAKE_CONFIG.read_text().replace("n_ctx = 2048\nquality_prior = 0.8", "n_ctx = 256\nquality_prior = 0.8"))
    with ModelPool(load_registry(cfg, include_user=False)) as pool:
        yield pool


def test_a_conversation_longer_than_the_context_drops_old_turns(tiny_pool):
    chat, screen = make_chat(tiny_pool, max_tokens=40)
    chat.handle("/system Keep it short.")
    for i in range(12):
        gen = chat.ask(f"question number {i} with some words")
        assert gen is not None and gen.text
    assert chat.history.first > 0 and len(chat.history.turns) == 12
    assert "left the model's context" in screen.err
    assert chat.history.messages()[0].content == "Keep it short."
    assert chat.worst_exit == 0


def test_a_message_longer_than_the_context_is_refused_politely(tiny_pool):
    chat, screen = make_chat(tiny_pool)
    chat.ask("short")
    assert chat.handle("x" * 400) is True
    assert "context of 256" in screen.err and chat.worst_exit == 2
    assert len(chat.history.turns) == 1
    assert chat.ask("still here").text


def test_prompt_too_long_from_the_engine_drops_turns_and_retries(tiny_pool, monkeypatch):
    chat, screen = make_chat(tiny_pool, max_tokens=40)
    monkeypatch.setattr(Chat, "fit", lambda self, *a: 0)  # only the engine's own check is left
    for i in range(10):
        assert chat.ask(f"question number {i} with some words").text
    assert chat.history.first > 0 and "dropped the oldest turn" in screen.err


def test_markdown_is_redrawn_on_a_terminal_only():
    screen = Screen(markdown=True)
    v = screen.view
    v.begin()
    v.text("Try **this**:\n- one\n- two")
    v.end("Try **this**:\n- one\n- two")
    assert "\x1b[3F\x1b[J" in screen.answer  # up three rows, clear, then Rich draws it
    assert "this" in v.out.file.getvalue()
    plain = Screen()
    plain.view.begin()
    plain.view.text("Try **this**")
    plain.view.end("Try **this**")
    assert plain.answer == "Try **this**\n"


# -- the command, without a terminal ----------------------------------------------------------


def test_stdin_turns_answers_on_stdout_status_on_stderr():
    r = qroute("chat", "--pair", "fake-big", "-n", "12", input="hello there\n\n/budget 2s\nand again\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") >= 2 and "tok/s" not in r.stdout
    assert r.stderr.count("tok/s") == 2 and "2s budget" in r.stderr and "cache 0/" in r.stderr
    quiet = qroute("-q", "chat", "--pair", "fake-big", "-n", "12", input="hello there\nand again\n")
    assert quiet.stdout == r.stdout and "tok/s" not in quiet.stderr


def test_stdin_json_lines_and_errors():
    r = qroute("chat", "--pair", "fake-big", "-n", "8", "--json", "--system", "Be brief.",
               input="one\n/nope\ntwo\n")
    assert r.returncode == 2  # the unknown command; the turns around it were answered
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert [row["turn"] for row in rows] == [1, 2] and [row["prompt"] for row in rows] == ["one", "two"]
    assert rows[1]["prompt_cached"] > 0 and rows[1]["route"]["chosen"] == "fake-big"
    assert "Unknown command '/nope'" in r.stderr and "Traceback" not in r.stderr


def test_unknown_pair_and_strategy_fail_before_reading():
    r = qroute("chat", "--pair", "fake-bigg", input="hi\n")
    assert r.returncode == 2 and "Did you mean 'fake-big'" in r.stderr
    r = qroute("chat", "--strategy", "fastest", input="hi\n")
    assert r.returncode == 2 and "Unknown strategy" in r.stderr and "Traceback" not in r.stderr


def test_a_line_with_undecodable_bytes_is_refused_and_the_chat_goes_on(fake_pool):
    """A terminal hands bytes that are not UTF-8 over as lone surrogates."""
    chat, screen = make_chat(fake_pool)
    assert chat.handle("caf\udce9") is True
    assert chat.history.turns == [] and chat.worst_exit == 2
    assert "not valid UTF-8" in screen.err
    assert chat.ask("still here").text


def test_interrupt_while_routing_gives_a_json_record(fake_pool, monkeypatch):
    chat, screen = make_chat(fake_pool, as_json=True)

    def stuck(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(chat.router, "decide", stuck)
    assert chat.handle("hello") is True and chat.interrupted
    assert json.loads(screen.answer) == {"prompt": "hello", "error": "interrupted", "finish_reason": "interrupted"}
