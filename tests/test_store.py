"""The SQLite run log: round trip, privacy, WAL, several writers, crashes, corruption, and the
faults that are not corruption (a lock, a full disk, a read-only medium, a newer qroute)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sqlite3
import subprocess
import sys

import pytest

from conftest import FAKE_CONFIG, ROOT, fake_profile
from helpers import rec, write_records
from qroute_cli import paths
from qroute_cli.routing.runlog import SCHEMA_VERSION, Store, is_corrupt, store_path, summarize
from rofs import read_only_run


def test_round_trip_order_and_machine_filter():
    with Store() as s:
        assert s.path == store_path() and s.path.exists()
        for i in range(5):
            s.append(rec(i, machine="m1" if i % 2 == 0 else "m2", drafted=10, accepted=i))
        got = s.recent()
        assert [r.prompt_chars for r in got] == [10, 11, 12, 13, 14]
        assert got[3] == rec(3, machine="m2", drafted=10, accepted=3, ts=got[3].ts)
        assert [r.prompt_chars for r in s.recent(machine="m1")] == [10, 12, 14]
        assert [r.prompt_chars for r in s.recent(limit=2)] == [13, 14]


def test_prompt_text_only_when_opted_in(tmp_path):
    with Store(tmp_path / "a.db") as s:
        s.append(rec(prompt="my secret prompt"))
        assert s.recent()[0].prompt is None
    with Store(tmp_path / "b.db", keep_prompts=True) as s:
        s.append(rec(prompt="my secret prompt"))
        assert s.recent()[0].prompt == "my secret prompt"
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("a.db*"))
    assert b"my secret prompt" not in raw
    assert b"my secret prompt" in b"".join(p.read_bytes() for p in tmp_path.glob("b.db*"))


def test_wal_mode_and_schema_version():
    Store().close()
    conn = sqlite3.connect(store_path())
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    conn.close()


def _schema_1_store(path) -> None:
    """A store as a qroute of schema 1 left it: no `checked` column, one run."""
    from qroute_cli.routing import runlog

    conn = sqlite3.connect(path)
    conn.executescript(runlog._SCHEMA.replace(",\n    checked INTEGER", ""))
    cols = [c for c in runlog._COLUMNS if c != "checked"]
    row = {**rec(7, drafted=10, accepted=4).__dict__}
    conn.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)})",
                 [row[c] for c in cols])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()


def test_a_schema_1_store_keeps_its_runs_and_gains_the_new_column(tmp_path):
    path = tmp_path / "old.db"
    _schema_1_store(path)
    with Store(path, read_only=True) as s:  # `qroute stats` on an old store changes nothing
        (old,) = s.recent()
        assert old.checked is None and old.judged == 10  # falls back to the drafted tokens
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 1
    with Store(path) as s:
        s.append(rec(8, drafted=8, accepted=3, checked=4))
        old, new = s.recent()
        assert (old.prompt_chars, old.accepted, old.checked) == (17, 4, None)
        assert new.checked == 4 and new.token_acceptance == pytest.approx(0.75)
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_several_processes_write_at_once(tmp_path):
    path = str(tmp_path / "shared.db")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=write_records, args=(path, 40, t)) for t in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with Store(path) as s:
        assert s.count() == 120
        assert {r.pair for r in s.recent()} == {"w0", "w1", "w2"}


def test_crash_mid_write_keeps_committed_rows(tmp_path):
    path = tmp_path / "crash.db"
    code = (
        "import os, sys; sys.path.insert(0, 'tests'); from helpers import rec; from qroute_cli.routing.runlog import Store;"
        f"s = Store({str(path)!r});"
        "[s.append(rec(i)) for i in range(7)];"
        "s._conn.execute('BEGIN'); s._conn.execute('DELETE FROM runs');"
        "os._exit(9)"  # dies inside an open transaction that would have deleted everything
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 9, out.stderr
    with Store(path) as s:
        assert s.count() == 7
        assert s.moved_to is None


def test_corrupted_store_is_moved_aside(tmp_path):
    path = tmp_path / "runs.db"
    path.write_bytes(b"this is not a database at all" * 100)
    messages = []
    with Store(path, notify=messages.append) as s:
        assert s.moved_to is not None and s.moved_to.exists()
        assert "moved to" in messages[0]
        s.append(rec())
        assert s.count() == 1
    assert path.exists()


def test_corrupt_backups_never_overwrite_each_other(tmp_path):
    """Three corrupt stores in the same second: three backups, each with its own bytes."""
    path = tmp_path / "runs.db"
    kept = []
    for i in range(3):
        path.write_bytes(f"not a database {i} ".encode() * 100)
        with Store(path) as s:
            kept.append(s.moved_to)
    assert len(set(kept)) == 3
    assert sorted(p.read_bytes()[:16] for p in kept) == [f"not a database {i}".encode() for i in range(3)]


def test_store_from_newer_version_is_kept_and_learning_is_off(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as s:
        s.append(rec())
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    messages = []
    with Store(path, notify=messages.append) as s:
        assert s.moved_to is None and not s.available
        assert len(messages) == 1 and "newer qroute" in messages[0] and "left as it is" in messages[0]
        assert s.append(rec()) is None and s.count() == 0
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.glob("runs.db*")) == ["runs.db"]


_HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA locking_mode = EXCLUSIVE")  # as a long maintenance job or an old sqlite3 shell would
conn.execute("BEGIN EXCLUSIVE")
conn.execute("DELETE FROM runs WHERE id < 0")
print("locked", flush=True)
sys.stdin.read()
conn.execute("COMMIT")
"""


def test_locked_store_is_not_moved_aside(tmp_path):
    path = tmp_path / "runs.db"
    with Store(path) as s:
        for i in range(3):
            s.append(rec(i))
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        messages = []
        with Store(path, notify=messages.append, busy_timeout_s=0.2) as s:
            assert s.moved_to is None and not s.available
            assert "locked" in messages[0] and "Learning is off" in messages[0]
            assert s.append(rec()) is None
    finally:
        holder.communicate("", timeout=30)
    assert not list(tmp_path.glob("*corrupt*"))
    with Store(path) as s:
        assert s.count() == 3


def test_only_sqlite_corruption_counts_as_corrupt(tmp_path):
    """A full disk (a real SQLITE_FULL) or a lock is a reason to pause learning, not to move a store."""
    conn = sqlite3.connect(tmp_path / "full.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("PRAGMA max_page_count = 2")
    with pytest.raises(sqlite3.OperationalError) as full:
        for _ in range(100):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 2000,))
    conn.close()
    assert not is_corrupt(full.value)
    (tmp_path / "junk.db").write_bytes(b"junk" * 1000)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        sqlite3.connect(tmp_path / "junk.db").execute("PRAGMA quick_check").fetchall()
    assert is_corrupt(notadb.value)
    assert not is_corrupt(sqlite3.OperationalError("database is locked"))
    assert is_corrupt(sqlite3.DatabaseError("database disk image is malformed"))


def test_unusable_data_dir_turns_learning_off():
    """Where the data dir cannot be made (here a file is in its way), a run is not logged."""
    paths.data_dir().parent.mkdir(parents=True, exist_ok=True)
    paths.data_dir().write_text("not a folder")
    messages = []
    with Store(notify=messages.append) as s:
        assert not s.available and "Learning is off" in messages[0]
        assert s.append(rec()) is None and s.recent() == [] and s.count() == 0
    assert paths.data_dir().read_text() == "not a folder"


def _qroute(*args: str) -> list[str]:
    return [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), *args]


def test_read_only_store_stats_reads_and_run_answers(fake_registry):
    """On a read-only medium, `qroute stats` reads the store and `qroute run` answers, exit 0."""
    from qroute_cli.routing.latency import save_profile

    save_profile(fake_profile(fake_registry))
    with Store() as s:
        for i in range(4):
            s.append(rec(i))
    home = paths.data_dir().parent
    def files() -> dict:
        return {p: p.read_bytes() for p in paths.data_dir().rglob("*") if p.is_file()}

    before = files()

    stats = read_only_run(home, _qroute("stats", "--json"))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["total"]["runs"] == 4

    run = read_only_run(home, _qroute("run", "hello", "--pair", "fake-big", "-n", "5"))
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip()  # the answer
    assert "Traceback" not in run.stderr and "Internal error" not in run.stderr
    assert "learning is off" in " ".join(run.stderr.lower().split())
    assert files() == before


def test_run_answers_when_the_data_dir_cannot_be_made():
    """No profile, no store, no salt can be written: the run still answers and exits 0."""
    paths.data_dir().parent.mkdir(parents=True, exist_ok=True)
    paths.data_dir().write_text("not a folder")
    env = dict(os.environ, QROUTE_MODELS=str(paths.data_dir().parent / "no-models"))
    r = subprocess.run(_qroute("run", "hello", "-n", "5"), capture_output=True, text=True, timeout=120,
                       env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() and "Traceback" not in r.stderr and "Internal error" not in r.stderr


def test_reset_clears():
    with Store() as s:
        for i in range(3):
            s.append(rec(i))
        assert s.reset() == 3
        assert s.count() == 0 and s.recent() == []


def test_summarize_figures():
    records = [
        rec(0, pair="a", observed_latency_s=1.0, predicted_latency_s=1.5, budget_s=2.0, drafted=10, accepted=5, overhead_ms=1.0),
        rec(1, pair="a", observed_latency_s=2.0, predicted_latency_s=1.0, budget_s=1.5, drafted=30, accepted=30, overhead_ms=3.0),
        rec(2, pair="b", observed_latency_s=4.0, predicted_latency_s=None, budget_s=None),
    ]
    out = summarize(records)
    a = out["pairs"]["a"]
    assert a["runs"] == 2
    assert a["acceptance"] == pytest.approx(35 / 40)
    assert a["latency_mdape"] == pytest.approx(0.5)  # |1-1.5|/1 and |2-1|/2: median of 0.5, 0.5
    assert a["budget_hit_rate"] == pytest.approx(0.5)
    assert a["overhead_ms_p50"] == pytest.approx(2.0)
    assert out["pairs"]["b"]["acceptance"] is None and out["pairs"]["b"]["budget_hit_rate"] is None
    assert out["total"]["runs"] == 3
    assert out["total"]["mean_latency_s"] == pytest.approx(7 / 3)
