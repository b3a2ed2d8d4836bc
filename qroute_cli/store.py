"""The run log: one SQLite row per generation, in the user data dir.

WAL mode with a busy timeout lets several qroute processes write at once; every row is its
own committed transaction with synchronous=FULL, so a crash mid-write loses nothing already
committed. The schema version lives in `PRAGMA user_version`. A file SQLite cannot read is
moved aside (with a message) and a fresh store is started: learning state is worth less than
a working command.

The prompt text is not kept unless the user opts in (QROUTE_LOG_PROMPTS=1): a SHA-256 of it,
its length and its task type are enough to learn from.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from qroute_cli import paths
from qroute_cli.errors import StoreError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    machine TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    prompt TEXT,
    task TEXT NOT NULL,
    prompt_chars INTEGER NOT NULL,
    pair TEXT NOT NULL,
    verifier TEXT NOT NULL,
    drafter TEXT NOT NULL,
    strategy TEXT NOT NULL,
    scorer TEXT NOT NULL,
    budget_s REAL,
    max_tokens INTEGER,
    predicted_latency_s REAL,
    predicted_tokens REAL,
    predicted_acceptance REAL,
    observed_latency_s REAL NOT NULL,
    ttft_s REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    prompt_cached INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    drafted INTEGER NOT NULL,
    accepted INTEGER NOT NULL,
    finish TEXT NOT NULL,
    overhead_ms REAL
);
CREATE INDEX IF NOT EXISTS runs_pair ON runs(pair);
"""


@dataclass(frozen=True)
class RunRecord:
    """One generation as the learner sees it (no prompt text unless opted in)."""

    ts: float
    machine: str
    prompt_hash: str
    task: str
    prompt_chars: int
    pair: str
    verifier: str
    drafter: str
    strategy: str
    scorer: str
    observed_latency_s: float
    ttft_s: float
    prompt_tokens: int
    output_tokens: int
    prompt_cached: int = 0
    drafted: int = 0
    accepted: int = 0
    finish: str = "stop"
    budget_s: float | None = None
    max_tokens: int | None = None
    predicted_latency_s: float | None = None
    predicted_tokens: float | None = None
    predicted_acceptance: float | None = None
    overhead_ms: float | None = None
    prompt: str | None = None

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def hit(self) -> bool | None:
        return None if not self.budget_s else self.observed_latency_s <= self.budget_s


_COLUMNS = [f.name for f in fields(RunRecord)]


def prompt_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def store_path() -> Path:
    return paths.data_dir() / "runs.db"


class Store:
    """Append-only run log with a few aggregate queries."""

    def __init__(
        self, path: Path | None = None, *, keep_prompts: bool = False,
        notify: Callable[[str], None] | None = None,
    ) -> None:
        self.path = Path(path) if path else store_path()
        self.keep_prompts = keep_prompts
        self.notify = notify or (lambda msg: None)
        self.moved_to: Path | None = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._conn = self._open()
        except sqlite3.DatabaseError as exc:
            self._conn = self._recover(exc)

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 10000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
                raise sqlite3.DatabaseError("integrity check failed")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema version {version} is newer than {SCHEMA_VERSION}")
            if version < SCHEMA_VERSION:
                # BEGIN IMMEDIATE: two processes creating the schema at once take turns.
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            return conn
        except sqlite3.DatabaseError:
            conn.close()
            raise

    def _recover(self, exc: Exception) -> sqlite3.Connection:
        """Move an unreadable store aside and start a fresh one."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                src.replace(Path(str(target) + suffix))
        self.moved_to = target
        self.notify(
            f"The learning store {self.path} could not be read ({exc}); it was moved to "
            f"{target} and a fresh one was started."
        )
        try:
            return self._open()
        except sqlite3.DatabaseError as again:
            raise StoreError(f"Cannot create the learning store {self.path}: {again}",
                             "Check that the data directory is writable.")

    def append(self, record: RunRecord) -> int:
        """Insert one run in its own committed transaction; returns its id."""
        row = asdict(record)
        if not self.keep_prompts:
            row["prompt"] = None
        cols = ", ".join(_COLUMNS)
        marks = ", ".join("?" for _ in _COLUMNS)
        try:
            cur = self._conn.execute(
                f"INSERT INTO runs ({cols}) VALUES ({marks})", [row[c] for c in _COLUMNS]
            )
        except sqlite3.Error as exc:
            raise StoreError(f"Could not write to the learning store {self.path}: {exc}")
        return int(cur.lastrowid)

    def recent(self, limit: int = 2000, machine: str | None = None) -> list[RunRecord]:
        """The latest `limit` runs, oldest first (optionally of one machine only)."""
        cols = ", ".join(_COLUMNS)
        where, args = ("WHERE machine = ?", [machine]) if machine else ("", [])
        rows = self._conn.execute(
            f"SELECT {cols} FROM runs {where} ORDER BY id DESC LIMIT ?", args + [limit]
        ).fetchall()
        return [RunRecord(**dict(zip(_COLUMNS, r))) for r in reversed(rows)]

    def count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def reset(self) -> int:
        """Delete every run; returns how many there were."""
        n = self.count()
        self._conn.execute("DELETE FROM runs")
        self._conn.execute("VACUUM")
        return n

    def close(self) -> None:
        try:
            self._conn.close()
        except sqlite3.Error:
            pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize(records: list[RunRecord]) -> dict:
    """Per pair and overall: runs, acceptance, latency error (MAPE), budget hit rate, overhead."""
    import statistics

    def block(recs: list[RunRecord]) -> dict:
        drafted = sum(r.drafted for r in recs)
        errors = [abs(r.observed_latency_s - r.predicted_latency_s) / r.observed_latency_s
                  for r in recs if r.predicted_latency_s and r.observed_latency_s > 0]
        hits = [r.hit for r in recs if r.hit is not None]
        overheads = [r.overhead_ms for r in recs if r.overhead_ms is not None]
        return {
            "runs": len(recs),
            "acceptance": sum(r.accepted for r in recs) / drafted if drafted else None,
            "latency_mape": statistics.median(errors) if errors else None,
            "budget_hit_rate": sum(hits) / len(hits) if hits else None,
            "mean_latency_s": statistics.fmean(r.observed_latency_s for r in recs) if recs else None,
            "overhead_ms_p50": statistics.median(overheads) if overheads else None,
        }

    pairs: dict[str, list[RunRecord]] = {}
    for r in records:
        pairs.setdefault(r.pair, []).append(r)
    return {"total": block(records), "pairs": {name: block(recs) for name, recs in sorted(pairs.items())}}
