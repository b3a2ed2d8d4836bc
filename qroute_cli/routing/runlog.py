"""The run log: one SQLite row per generation, in the user data dir.

WAL mode with a busy timeout lets several qroute processes write at once; every row is its
own committed transaction with synchronous=FULL, so a crash mid-write loses nothing already
committed. The schema version lives in `PRAGMA user_version`.

Learning state is worth less than a working command, and a user's runs are worth more than
a fresh store. So a store that cannot be used is never in the way: only a file SQLite itself
calls corrupt (SQLITE_CORRUPT, SQLITE_NOTADB, a failed quick_check) is moved aside, to a
backup name that is never reused, and a fresh one started. A store that is locked, on a full
disk or a read-only medium, or written by a newer qroute is left exactly as it is: the
command warns once and runs without learning. `qroute stats` opens the file read-only.

The prompt text is not kept unless the user opts in (QROUTE_LOG_PROMPTS=1): a salted SHA-256
of it (the salt is random per install, so a guessed prompt cannot be confirmed from the log),
its length and its task type are enough to learn from.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable

from qroute_cli import paths
from qroute_cli.errors import StoreError

SCHEMA_VERSION = 3
# Long enough to wait out another process's write burst, short enough that a store held by a
# stuck process costs one pause, not a hung command.
BUSY_TIMEOUT_S = 10.0

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
    overhead_ms REAL,
    checked INTEGER,
    endpoint TEXT,
    server_prefill_s REAL,
    server_decode_s REAL
);
CREATE INDEX IF NOT EXISTS runs_pair ON runs(pair);
CREATE TABLE IF NOT EXISTS notes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL
);
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
    scorer: str  # its name; "none": nothing was predicted for the run (--pair with no profile)
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
    endpoint: str | None = None  # the endpoint a remote pair ran on
    server_prefill_s: float | None = None  # that server's own timings, where it reports them
    server_decode_s: float | None = None
    checked: int | None = None  # draft tokens judged (SpecStats.checked); None in runs of schema 1

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None

    @property
    def judged(self) -> int:
        """Draft tokens the verifier judged; a run logged before they were counted gives its
        drafted tokens (which reads its drafter as worse than it was)."""
        return self.checked if self.checked is not None else self.drafted

    @property
    def token_acceptance(self) -> float | None:
        """The per-token rate the cost curve assumes (kept / judged)."""
        return self.accepted / self.judged if self.judged else None

    @property
    def hit(self) -> bool | None:
        return None if not self.budget_s else self.observed_latency_s <= self.budget_s


_COLUMNS = [f.name for f in fields(RunRecord)]

# Columns added after schema 1, with their SQL type: a store of an older schema gains them
# (NULL in its old rows) and keeps every run it has.
_ADDED_COLUMNS = {"checked": "INTEGER",
                  # 3: a pair on a remote endpoint logs it and that server's own prompt and decode
                  # time (the rest of its wall clock is network and queue)
                  "endpoint": "TEXT", "server_prefill_s": "REAL", "server_decode_s": "REAL"}


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    have = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    for name, sql_type in _ADDED_COLUMNS.items():
        if name not in have:
            conn.execute(f"ALTER TABLE runs ADD COLUMN {name} {sql_type}")


def prompt_hash(text: str) -> str:
    """A salted hash of the prompt: equal prompts match within one install, nowhere else."""
    return hmac.new(install_salt(), text.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


_salts: dict[Path, bytes] = {}


def install_salt() -> bytes:
    """This install's random salt: the `salt` file in the data dir, made on first use."""
    path = paths.data_dir() / "salt"
    if path not in _salts:
        _salts[path] = _read_salt(path) or _new_salt(path)
    return _salts[path]


def _read_salt(path: Path) -> bytes | None:
    try:
        return bytes.fromhex(path.read_text(encoding="ascii").strip()) or None
    except (OSError, ValueError):
        return None


def _new_salt(path: Path) -> bytes:
    fresh = secrets.token_bytes(32)
    try:
        paths.private_dir(path.parent)
        paths.write_private(path, fresh.hex() + "\n", overwrite=False)
    except FileExistsError:
        return _read_salt(path) or fresh  # another process made it first: use theirs
    except OSError:
        pass  # an unusable data dir: a salt for this process only (its runs are not logged)
    return fresh


def store_path() -> Path:
    return paths.data_dir() / "runs.db"


# Primary SQLite result codes (sqlite3.h) that decide what happens to a store that fails.
_CODES = {5: "BUSY", 6: "LOCKED", 8: "READONLY", 10: "IOERR", 11: "CORRUPT", 13: "FULL",
          14: "CANTOPEN", 23: "AUTH", 26: "NOTADB"}
# Python < 3.11 has no error codes on the exception: SQLite's fixed messages say the same.
_MESSAGES = {"locked": "BUSY", "readonly": "READONLY", "read-only": "READONLY", "disk is full": "FULL",
             "malformed": "CORRUPT", "not a database": "NOTADB", "unable to open": "CANTOPEN",
             "disk i/o": "IOERR"}


class CorruptStore(sqlite3.DatabaseError):
    """quick_check found damage SQLite did not report on open."""


class _NewerStore(Exception):
    """A schema version above SCHEMA_VERSION: a newer qroute wrote it."""


def sqlite_error(exc: BaseException) -> str:
    """'CORRUPT', 'BUSY', 'FULL', ... for an SQLite error; '' when it is something else."""
    if isinstance(exc, CorruptStore):
        return "CORRUPT"
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return _CODES.get(code & 0xFF, "")
    text = str(exc).lower()
    return next((name for key, name in _MESSAGES.items() if key in text), "")


def is_corrupt(exc: BaseException) -> bool:
    """Only SQLite's own verdict that the file is damaged justifies moving a store aside."""
    return sqlite_error(exc) in ("CORRUPT", "NOTADB")


def _why(exc: BaseException) -> str:
    """Why a store cannot be used, in words."""
    kind = sqlite_error(exc)
    if kind in ("BUSY", "LOCKED"):
        return "another process holds it locked"
    if kind == "READONLY" or isinstance(exc, PermissionError) or getattr(exc, "errno", 0) == 30:
        return "it is read-only here"
    if kind == "FULL" or getattr(exc, "errno", 0) == 28:
        return "the disk is full"
    if kind == "CANTOPEN":
        return "it cannot be opened for writing: a read-only medium, or no permission"
    return str(exc)


class Store:
    """Append-only run log with a few aggregate queries.

    When the store cannot be used, `problem` says why; appends then do nothing and queries
    see no runs. `read_only` opens an existing file without writing anything (`qroute stats`).
    """

    def __init__(
        self, path: Path | None = None, *, keep_prompts: bool = False,
        notify: Callable[[str], None] | None = None, read_only: bool = False,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
    ) -> None:
        self.path = Path(path) if path else store_path()
        self.keep_prompts = keep_prompts
        self.notify = notify or (lambda msg: None)
        self.read_only = read_only
        self.busy_timeout_s = busy_timeout_s
        self.moved_to: Path | None = None
        self.problem: str | None = None
        self._conn: sqlite3.Connection | None = None
        self._inode: int | None = None
        self._lock = threading.RLock()  # one thread at a time on the connection
        try:
            self._conn = self._open_read_only() if read_only else self._open_or_recover()
        except _NewerStore as exc:
            self._give_up(f"The learning store {self.path} was written by a newer qroute ({exc}).",
                          "It is left as it is; upgrade qroute to learn from it again.")
        except (sqlite3.Error, OSError) as exc:
            if is_corrupt(exc):  # only here in read-only mode: otherwise it was moved aside
                self._give_up(f"The learning store {self.path} is damaged ({exc}).",
                              "The next `qroute run` moves it aside and starts a fresh one.")
            else:
                self._give_up(f"The learning store {self.path} cannot be used ({_why(exc)}).")

    @property
    def available(self) -> bool:
        return self._conn is not None

    def _give_up(self, problem: str, then: str = "") -> None:
        self.close()
        self.problem = problem
        if not self.read_only:
            self.notify(f"{problem} {then or 'Learning is off for this run.'}")

    def _connect(self, target: str, uri: bool = False) -> sqlite3.Connection:
        # `qroute serve` answers from several threads: any of them may use the connection, one
        # at a time (self._lock around every use).
        conn = sqlite3.connect(target, timeout=self.busy_timeout_s, isolation_level=None, uri=uri,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        return conn

    def _open_or_recover(self) -> sqlite3.Connection:
        paths.private_dir(self.path.parent)
        try:
            return self._open()
        except sqlite3.DatabaseError as exc:
            if not is_corrupt(exc):
                raise
            return self._recover(exc)

    def _open(self) -> sqlite3.Connection:
        paths.private_file(self.path)  # created owner-only; SQLite gives -wal/-shm the same mode
        self._inode = self.path.stat().st_ino
        conn = self._connect(str(self.path))
        try:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            self._check(conn)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version < SCHEMA_VERSION:
                # BEGIN IMMEDIATE: two processes creating the schema at once take turns.
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    conn.execute(statement)
                _add_missing_columns(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            for suffix in ("-wal", "-shm"):  # files an older qroute made world-readable
                if Path(str(self.path) + suffix).exists():
                    paths.private_file(Path(str(self.path) + suffix))
            return conn
        except BaseException:
            conn.close()
            raise

    @staticmethod
    def _check(conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA quick_check").fetchone()[0] != "ok":
            raise CorruptStore("quick_check failed")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise _NewerStore(f"schema version {version}, this qroute reads up to {SCHEMA_VERSION}")

    def _open_read_only(self) -> sqlite3.Connection | None:
        """Open without writing: no file, journal or lock is created (read-only media work)."""
        if not self.path.exists():
            return None
        uri = self.path.resolve().as_uri()
        try:
            conn = self._connect(uri + "?mode=ro", uri=True)
            try:
                self._check(conn)
            except BaseException:
                conn.close()
                raise
        except sqlite3.OperationalError as exc:
            if sqlite_error(exc) not in ("CANTOPEN", "READONLY"):
                raise
            # A WAL store on a read-only medium: SQLite cannot make its shared-memory file,
            # but the file cannot change under us either.
            conn = self._connect(uri + "?immutable=1", uri=True)
            try:
                self._check(conn)
            except BaseException:
                conn.close()
                raise
        return conn

    def _recover(self, exc: Exception) -> sqlite3.Connection:
        """Move a corrupt store aside (to a name no other backup has) and start a fresh one."""
        try:
            same = self.path.stat().st_ino == self._inode
        except FileNotFoundError:
            same = False
        if same:  # not already replaced by another process that found the same damage
            target = paths.move_aside(self.path, "corrupt", companions=("-wal", "-shm"))
            self.moved_to = target
            self.notify(
                f"The learning store {self.path} is damaged ({exc}); it was moved to {target} "
                "and a fresh one was started."
            )
        return self._open()

    def append(self, record: RunRecord) -> int | None:
        """Insert one run in its own committed transaction; returns its id (None: not logged).

        The first failure raises StoreError; later runs of this process are not logged.
        """
        with self._lock:
            if self._conn is None:
                return None
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
                self.close()
                self.problem = f"Could not write to the learning store {self.path} ({_why(exc)})."
                raise StoreError(self.problem)
            return int(cur.lastrowid)

    def recent(self, limit: int = 2000, machine: str | None = None) -> list[RunRecord]:
        """The latest `limit` runs, oldest first (optionally of one machine only)."""
        return [rec for _, rec in self.tail(limit, machine)]

    def tail(self, limit: int = 2000, machine: str | None = None, after: int = 0) -> list[tuple[int, RunRecord]]:
        """(id, run) of the latest `limit` runs with an id above `after`, oldest first
        (optionally of one machine only)."""
        with self._lock:
            if self._conn is None:
                return []
            # A store opened read-only keeps its schema: columns it predates read as their default.
            have = {row[1] for row in self._conn.execute("PRAGMA table_info(runs)")}
            names = [c for c in _COLUMNS if c in have]
            where, args = "WHERE id > ?", [after]
            if machine:
                where, args = where + " AND machine = ?", args + [machine]
            rows = self._conn.execute(
                f"SELECT id, {', '.join(names)} FROM runs {where} ORDER BY id DESC LIMIT ?", args + [limit]
            ).fetchall()
            return [(r[0], RunRecord(**dict(zip(names, r[1:])))) for r in reversed(rows)]

    def stamp(self, run_id: int) -> float | None:
        """The time logged with run `run_id`; None when there is no such run or it cannot be read."""
        with self._lock:
            if self._conn is None:
                return None
            try:
                row = self._conn.execute("SELECT ts FROM runs WHERE id = ?", (run_id,)).fetchone()
            except sqlite3.Error:
                return None
            return row[0] if row else None

    def note(self, subject: str, message: str) -> None:
        """Keep a one-line note (e.g. an endpoint that failed and was left out); never raises:
        a note is worth less than the answer it is about."""
        with self._lock:
            if self._conn is None or self.read_only:
                return
            import time

            try:
                self._conn.execute("INSERT INTO notes (ts, subject, message) VALUES (?, ?, ?)",
                                   (time.time(), subject, message))
            except sqlite3.Error:
                pass

    def notes(self, limit: int = 100) -> list[tuple[float, str, str]]:
        """The latest notes, oldest first: (time, subject, message)."""
        with self._lock:
            if self._conn is None:
                return []
            try:
                rows = self._conn.execute("SELECT ts, subject, message FROM notes ORDER BY id DESC LIMIT ?",
                                          (limit,)).fetchall()
            except sqlite3.Error:  # a store older than notes, opened read-only
                return []
            return [tuple(r) for r in reversed(rows)]

    def count(self) -> int:
        with self._lock:
            if self._conn is None:
                return 0
            return int(self._conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0])

    def reset(self) -> int:
        """Delete every run; returns how many there were."""
        with self._lock:
            if self._conn is None or self.read_only:
                raise StoreError(self.problem or f"The learning store {self.path} is open read-only.")
            n = self.count()
            self._conn.execute("DELETE FROM runs")
            self._conn.execute("VACUUM")
            return n

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except sqlite3.Error:
                    pass
                self._conn = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def summarize(records: list[RunRecord]) -> dict:
    """Per pair and overall: runs, acceptance, latency error (median APE), budget hit rate, overhead."""
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
            "latency_mdape": statistics.median(errors) if errors else None,
            "budget_hit_rate": sum(hits) / len(hits) if hits else None,
            "mean_latency_s": statistics.fmean(r.observed_latency_s for r in recs) if recs else None,
            "overhead_ms_p50": statistics.median(overheads) if overheads else None,
        }

    pairs: dict[str, list[RunRecord]] = {}
    for r in records:
        pairs.setdefault(r.pair, []).append(r)
    return {"total": block(records), "pairs": {name: block(recs) for name, recs in sorted(pairs.items())}}
