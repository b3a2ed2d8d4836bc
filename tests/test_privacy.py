"""One privacy rule for every file qroute writes: owner-only folders and files, whatever the
umask; prompt text nowhere unless QROUTE_LOG_PROMPTS=1; prompt hashes salted per install;
saved conversations never overwrite a file unasked."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys

import pytest

from conftest import FAKE_CONFIG, ROOT, make_chat
from qroute_cli import paths
from qroute_cli.chat import History, Turn, input_history
from qroute_cli.errors import UsageError
from qroute_cli.routing.runlog import Store, prompt_hash


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_everything_a_run_writes_is_owner_only(tmp_path):
    env = dict(os.environ, QROUTE_MODELS=str(tmp_path / "no-models"))
    cmd = [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "run", "a private question", "-n", "5"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT,
                       preexec_fn=lambda: os.umask(0o022))  # the usual umask: world-readable by default
    assert r.returncode == 0, r.stderr
    data = paths.data_dir()
    written = [data, *data.rglob("*")]
    assert {p.name for p in written} >= {"runs.db", "salt", "profiles"}
    loose = {str(p.relative_to(data.parent)): oct(mode(p)) for p in written
             if mode(p) != (0o700 if p.is_dir() else 0o600)}
    assert loose == {}
    raw = b"".join(p.read_bytes() for p in data.rglob("*") if p.is_file())
    assert b"a private question" not in raw


def test_an_older_world_readable_install_is_made_private():
    with Store() as s:
        path = s.path
    os.chmod(path.parent, 0o755)
    os.chmod(path, 0o644)
    with Store():
        pass
    assert mode(path.parent) == 0o700 and mode(path) == 0o600


def test_prompt_hashes_are_salted_per_install(tmp_path, monkeypatch):
    first = prompt_hash("What is my bank PIN?")
    assert first == prompt_hash("What is my bank PIN?")  # equal prompts still match in one install
    assert first != hashlib.sha256(b"What is my bank PIN?").hexdigest()[:32]  # a guess cannot be confirmed
    salt = paths.data_dir() / "salt"
    assert mode(salt) == 0o600 and len(bytes.fromhex(salt.read_text().strip())) == 32
    monkeypatch.setenv("QROUTE_HOME", str(tmp_path / "another-install"))
    assert prompt_hash("What is my bank PIN?") != first


def test_chat_input_history_only_with_prompt_logging(monkeypatch):
    from prompt_toolkit.history import FileHistory, InMemoryHistory

    notices: list[str] = []
    path = paths.data_dir() / "chat_history"
    monkeypatch.delenv("QROUTE_LOG_PROMPTS", raising=False)
    assert isinstance(input_history(notices.append), InMemoryHistory)
    assert not path.exists()

    monkeypatch.setenv("QROUTE_LOG_PROMPTS", "1")
    history = input_history(notices.append)
    assert isinstance(history, FileHistory) and mode(path) == 0o600 and mode(path.parent) == 0o700
    history.store_string("my typed line")
    assert "my typed line" in path.read_text()

    os.chmod(path, 0o644)  # as an older qroute left it
    monkeypatch.delenv("QROUTE_LOG_PROMPTS")
    assert isinstance(input_history(notices.append), InMemoryHistory)
    assert "my typed line" in path.read_text() and mode(path) == 0o600  # kept, but private now
    assert notices == []


def test_save_never_overwrites_unasked_and_writes_whole_private_files(tmp_path):
    h = History()
    h.add(Turn("q1", "a1", "fake-big"))
    target = tmp_path / "chat.md"
    target.write_text("my notes, not a chat")
    with pytest.raises(UsageError, match="exists already") as info:
        h.save(target)
    assert "--force" in info.value.hint
    assert target.read_text() == "my notes, not a chat"
    assert h.save(target, overwrite=True) == "markdown"
    assert "## You\n\nq1" in target.read_text() and mode(target) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chat.md", "qroute-home"]  # no temp files left


def test_save_command_force_flag(fake_pool, tmp_path):
    chat, screen = make_chat(fake_pool)
    chat.ask("hello")
    target = tmp_path / "my chat.json"
    chat.handle(f"/save {target}")
    first = target.read_text()
    chat.ask("again")
    chat.handle(f"/save {target}")
    assert "exists already" in screen.err and target.read_text() == first and chat.worst_exit == 2
    chat.handle(f"/save {target} --force")
    assert target.read_text() != first and "again" in target.read_text()
