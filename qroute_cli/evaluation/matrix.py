"""The bench's result matrix: every (prompt, pair) run once, scored, cached on disk.

A cell's cache key names everything that changes its text or time: the pair's model hashes,
the prompt, the generation settings (the answer cap among them) and the regime it ran in:
the engine code, the llama.cpp build, the machine and the thread count (`Regime`). The cache
is append-only JSON Lines, so an interrupted bench resumes where it stopped, and a cell from
another regime is run again, never mixed with this one's.

The results of an earlier bench (`--out DIR`: matrix.json and capped.json carry each cell's
key) seed the cache: a bench can extend a committed matrix where the regime matches. A cell
in them without a key (written before keys were) is of another regime and is run again.

Every cell generated records how busy the rest of the machine kept the CPU while it ran
(`others_cores`, from /proc: cores other processes used on average; None where unknown).
It is not part of the key: a cell timed under load is of the same regime, just a worse
measurement, so `CellStore(rerun_busy=X)` runs again the cached cells that read above X.

A cell runs as a forced `qroute run --pair` would: a drafting pair drafts by its cost curve
from the calibration profile (which then joins its key), and the pair's speed memory and
every loaded model's KV cache start empty for every cell.

Besides the matrix proper, a route that caps the answer (no pair fits the budget, so the
router shortens max_tokens) needs the answer generated with that cap: `Matrix.capped_cell`
runs it as a cell of its own, cached like the others, when the matrix has a `CellStore`.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from qroute_cli import paths
from qroute_cli.config import Registry
from qroute_cli.evaluation.tasks import TASKS, Item
from qroute_cli.jsonl import read_jsonl
from qroute_cli.speculation import CostCurve
from qroute_cli.types import GenerationConfig, Pair

# 2: the key names the regime. Version 1 keys (no regime) never match: those cells run again.
# 3: every cell reads its prompt afresh (KV caches emptied first); a version 2 cell may have
# found its prompt cached by the pair that ran it just before, so none is reused.
CACHE_VERSION = 3
MATRIX_FILE, CAPPED_FILE = "matrix.json", "capped.json"  # in a bench's --out directory


@dataclass(frozen=True)
class Cell:
    """One pair's answer to one prompt."""

    quality: float
    scores: dict
    latency_s: float
    ttft_s: float
    tokens: int
    prompt_tokens: int
    drafted: int
    accepted: int
    text: str

    @property
    def acceptance(self) -> float | None:
        return self.accepted / self.drafted if self.drafted else None


CELL_FIELDS = tuple(Cell.__dataclass_fields__)


@dataclass(frozen=True)
class Regime:
    """What besides the models, the prompt and the settings changes a cell's text or time."""

    engine: str  # provenance.engine_revision(): a hash of the generation code
    llama_cpp: str  # provenance.llama_cpp_identity(): version and native build
    machine: str  # the CPU model, with its family, model and stepping where known (latency.cpu_detail)
    threads: int | None  # llama.cpp threads the cell runs with; None: models without threads (fakes)


def current_regime(threads: int | None) -> Regime:
    from qroute_cli.evaluation.provenance import engine_revision, llama_cpp_identity
    from qroute_cli.routing.latency import cpu_detail, cpu_model

    detail = cpu_detail()
    return Regime(engine_revision(), llama_cpp_identity(), f"{cpu_model()} ({detail})" if detail else cpu_model(),
                  threads)


@dataclass
class Matrix:
    items: list[Item]
    pairs: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)
    # Answers generated with a router's cap: (item id, pair, max_tokens) -> cell.
    capped: dict[tuple[str, str, int], Cell] = field(default_factory=dict)
    # How each cell and capped cell was obtained, for the results files: key -> {"key", "regime"}.
    meta: dict[tuple, dict] = field(default_factory=dict)
    store: "CellStore | None" = None  # runs a capped cell not measured yet; None: offline (replay)
    # Told (item, pair, cap, cached?) of each capped answer fetched from the store, for a progress bar.
    on_capped: Callable[[Item, str, int, bool], None] | None = None

    def cell(self, item: Item, pair: str) -> Cell:
        return self.cells[(item.id, pair)]

    def capped_cell(self, item: Item, pair: str, cap: int) -> Cell | None:
        """`pair`'s measured answer to `item` with max_tokens=`cap`: the uncapped cell when the
        cap could not have changed its run, a capped cell measured before, or (with a store) one
        generated now; None when it was not measured and cannot be here."""
        full = self.cell(item, pair)
        if full.tokens + GenerationConfig().draft_max <= cap:
            # The answer stopped on its own this far below the cap: the engine never shortened
            # a draft for it (k <= max_tokens - tokens so far), so a capped run is this run.
            return full
        key = (item.id, pair, cap)
        if key not in self.capped and self.store is not None:
            runs = self.store.counts["run"] + self.store.counts["capped run"]
            self.capped[key], self.meta[key] = self.store.get(item, pair, cap)
            if self.on_capped is not None:
                self.on_capped(item, pair, cap, self.store.counts["run"] + self.store.counts["capped run"] == runs)
        return self.capped.get(key)


def cell_key(registry: Registry, pair: Pair, item: Item, config: GenerationConfig, regime: Regime,
             costs: CostCurve | None = None) -> str:
    """The cell's cache key. `costs`, the cost curve a drafting pair's draft lengths follow,
    joins the key only where there is one, so a plain pair's key stays what it was."""
    ident = {
        "v": CACHE_VERSION,
        "models": [registry.model(name).identity for name in pair.model_names],
        "drafter": pair.drafter_kind,
        "prompt": item.prompt,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "draft_max": config.draft_max,
        "regime": asdict(regime),
    }
    if costs is not None:
        ident["costs"] = asdict(costs)
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def load_cache(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for row in read_jsonl(path, skip_broken=True):  # a line cut by a crash: that cell runs again
        if isinstance(row, dict) and "key" in row:
            out[row["key"]] = row
    return out


@dataclass
class Seeds:
    """The cells of an earlier bench's results directory: by key where they carry one, and
    by (item, pair, max_tokens) for every row, to tell a cell of another regime apart."""

    by_key: dict[str, dict] = field(default_factory=dict)
    slots: set[tuple[str, str, int]] = field(default_factory=set)

    @classmethod
    def load(cls, results_dir: Path | None) -> "Seeds":
        seeds = cls()
        if results_dir is None:
            return seeds
        for name in (MATRIX_FILE, CAPPED_FILE):
            path = Path(results_dir) / name
            if not path.is_file():
                continue
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # an unreadable results file seeds nothing: its cells run again
            for r in rows if isinstance(rows, list) else []:
                if not isinstance(r, dict) or r.get("task") not in TASKS or not all(k in r for k in CELL_FIELDS):
                    continue
                cap = r.get("max_tokens", TASKS[r["task"]].max_tokens)
                seeds.slots.add((r["item"], r["pair"], cap))
                if r.get("key"):
                    seeds.by_key[r["key"]] = {"key": r["key"], "item": r["item"], "pair": r["pair"],
                                              "regime": r.get("regime"), "others_cores": r.get("others_cores"),
                                              "cell": {k: r[k] for k in CELL_FIELDS}}
        return seeds


class CellStore:
    """Cells by cache key: from the cache file, else from the seeds, else generated now (and
    appended to the cache). `counts` says how many came from where, for the bench output."""

    def __init__(self, pool, cache_path: Path, seeds: Seeds | None = None, profile=None,
                 rerun_busy: float | None = None, quiet: "QuietWait | None" = None) -> None:
        self.pool, self.registry = pool, pool.registry
        # Before a cell runs, wait until other processes leave the CPU (None: run at once).
        self.quiet = quiet
        # Cached cells during which other processes kept more than this many cores busy run
        # again (None: every cached cell stands; a cell without a reading stands too).
        self.rerun_busy = rerun_busy
        # The calibration profile: a drafting pair's cell drafts by the profile's cost curve,
        # as `qroute run --pair` does (None: by acceptance alone).
        self.profile = profile
        self.cache_path = cache_path
        self.cache = load_cache(cache_path)
        self.seeds = seeds or Seeds()
        self.counts: Counter = Counter()
        paths.private_dir(cache_path.parent)
        paths.private_file(cache_path)  # answers are kept owner-only, as every file qroute writes

    def get(self, item: Item, pair_name: str, max_tokens: int | None = None) -> tuple[Cell, dict]:
        """(cell, {"key", "regime"}) for `pair_name` on `item` at `max_tokens` (default: the
        task's cap); also counted in `counts` under 'cache', 'results' or 'run' (with 'capped '
        before it for a capped cell, and 'other regime' for a run the results had a cell for)."""
        from qroute_cli.generation.runner import run_prompt, user_messages
        from qroute_cli.routing.latency import cost_curve

        task = TASKS[item.task]
        cap = max_tokens if max_tokens is not None else task.max_tokens
        kind = "" if cap == task.max_tokens else "capped "
        pair = self.registry.pair(pair_name)
        config = GenerationConfig(max_tokens=cap, temperature=0.0)
        # The thread count this cell will run with (a fixed --threads, else what the load
        # leaves free now; the run applies the same count): part of the regime.
        regime = current_regime(self.pool.next_threads())
        costs = cost_curve(self.profile, pair) if self.profile is not None and not pair.remote else None
        key = cell_key(self.registry, pair, item, config, regime, costs)
        meta = {"key": key, "regime": asdict(regime)}
        row = self.cache.get(key)
        source = "cache"
        if row is None and key in self.seeds.by_key:
            row, source = self.seeds.by_key[key], "results"
            if not self._busy(row):
                self._append(key, item, pair_name, cap, {**meta, "others_cores": row.get("others_cores")}, row["cell"])
        if row is not None and self._busy(row):
            self.counts[kind + "busy"] += 1
            row = None
        if row is not None:
            meta["others_cores"] = row.get("others_cores")
            cell = Cell(**row["cell"])
            # Score again from the stored text: a metric fix applies to cached runs too.
            scores = task.score(cell.text, item.reference)
            self.counts[kind + source] += 1
            return replace(cell, scores=scores, quality=float(scores["quality"])), meta
        # Each cell is a one-shot run, as in a fresh `qroute run`, so a cell does not depend on
        # the cells before it: the pair's speed memory (the back-off's evidence) starts empty,
        # and every loaded model's KV cache is emptied. The pairs take each prompt in turn, so
        # a verifier would otherwise find the whole prompt cached by the pair before it and
        # skip its prefill (a TTFT of 0.05 s instead of 1.5 s on the 1.5B).
        getattr(self.pool, "speed", {}).pop(pair_name, None)
        for name in self.pool.loaded():
            self.pool.get(name).truncate(0)
        if self.quiet is not None and not pair.remote:
            self.quiet.wait()
        before = _cpu_reading()
        gen = run_prompt(self.pool, pair, user_messages(item.prompt), config, costs=costs)
        meta["others_cores"] = _others_since(before)
        scores = task.score(gen.text, item.reference)
        s = gen.stats
        cell = Cell(
            quality=float(scores["quality"]), scores=scores, latency_s=s.latency_s, ttft_s=s.ttft_s,
            tokens=s.output_tokens, prompt_tokens=s.prompt_tokens, drafted=s.drafted,
            accepted=s.accepted, text=gen.text,
        )
        self._append(key, item, pair_name, cap, meta, asdict(cell))
        self.counts[kind + "run"] += 1
        if (item.id, pair_name, cap) in self.seeds.slots:
            self.counts[kind + "other regime"] += 1
        return cell, meta

    def _busy(self, row: dict) -> bool:
        load = row.get("others_cores")
        return self.rerun_busy is not None and load is not None and load > self.rerun_busy

    def _append(self, key: str, item: Item, pair: str, cap: int, meta: dict, cell: dict) -> None:
        row = {"key": key, "item": item.id, "pair": pair, "max_tokens": cap, "regime": meta["regime"],
               "others_cores": meta.get("others_cores"), "cell": cell}
        self.cache[key] = row
        with self.cache_path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(row) + "\n")


@dataclass
class QuietWait:
    """Holds a cell back while other processes keep more than `below` cores busy: it samples the
    machine for `sample_s` at a time until a sample reads at or under `below`, or until `most_s`
    have passed (then the cell runs, and its own reading says how busy the machine was, for
    --rerun-busy). `on_wait` is told each busy reading, for a progress line. `sleep`, `clock`
    and `read` (busy and own clock ticks) go to each sample's `threads.CpuLoad`."""

    below: float
    most_s: float = 1800.0
    sample_s: float = 1.0
    on_wait: Callable[[float, float], None] | None = None  # (cores others used, seconds waited)
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    read: Callable[[], tuple[int, int] | None] | None = None  # None: threads.proc_ticks
    waited_s: float = 0.0  # in all, over every cell

    def wait(self) -> None:
        from qroute_cli.generation.threads import CpuLoad, proc_ticks

        waited = 0.0
        while waited < self.most_s:
            # A fresh reader per sample: it reads, sleeps sample_s and reads again.
            load = CpuLoad(self.sample_s, clock=self.clock, sleep=self.sleep, read=self.read or proc_ticks).others()
            if load is None or load <= self.below:
                return  # no /proc: nothing to go by
            waited += self.sample_s
            self.waited_s += self.sample_s
            if self.on_wait is not None:
                self.on_wait(round(load, 3), waited)


def _cpu_reading() -> tuple[float, int, int] | None:
    """(seconds, machine busy ticks, this process's ticks) now; None where /proc is missing."""
    from qroute_cli.generation.threads import proc_ticks

    ticks = proc_ticks()
    return None if ticks is None else (time.monotonic(), *ticks)


# A cell shorter than this reads too few clock ticks (10 ms each) to say how busy the machine was.
MIN_READ_S = 0.25


def _others_since(before: tuple[float, int, int] | None) -> float | None:
    """Cores other processes kept busy on average since `before`, rounded; None when unknown
    (no /proc, or too short an interval to tell)."""
    from qroute_cli.generation.threads import others_cores

    after = _cpu_reading()
    if before is None or after is None or after[0] - before[0] < MIN_READ_S:
        return None
    return round(others_cores(before, after), 3)


def cell_order(items: Sequence[Item], pairs: Sequence[str]) -> list[tuple[Item, str]]:
    """Prompt-major, every pair on a prompt before the next prompt, the pairs' order rotated
    from one prompt to the next: the machine's speed drifts over minutes (a shared host can move
    by a third), and this spreads the drift over every pair alike instead of giving each pair
    its own stretch of time, which would skew the pairs' latencies against each other."""
    n = len(pairs)
    return [(item, pairs[(i + j) % n]) for i, item in enumerate(items) for j in range(n)]


def run_matrix(
    pool,
    items: Sequence[Item],
    pairs: Sequence[str],
    cache_path: Path,
    *,
    on_cell: Callable[[Item, str, Cell, bool], None] | None = None,
    seed_dir: Path | None = None,
    profile=None,
    rerun_busy: float | None = None,
    quiet: QuietWait | None = None,
) -> Matrix:
    """Run every (item, pair) not yet in the cache (or in `seed_dir`'s results with this
    regime), in `cell_order`. The matrix keeps its CellStore, so capped cells the strategies
    ask for are generated and cached too."""
    store = CellStore(pool, cache_path, Seeds.load(seed_dir), profile, rerun_busy, quiet)
    matrix = Matrix(list(items), list(pairs), store=store)
    for item, pair_name in cell_order(items, pairs):
        before = store.counts["run"]
        cell, meta = store.get(item, pair_name)
        matrix.cells[(item.id, pair_name)] = cell
        matrix.meta[(item.id, pair_name)] = meta
        if on_cell:
            on_cell(item, pair_name, cell, store.counts["run"] == before)
    return matrix


def cell_counts(m: Matrix) -> dict:
    """How the matrix's cells were obtained: reused from the cache or from the seeding results,
    run now, and of those run, how many the results had from another regime; the same for
    capped cells."""
    c = m.store.counts if m.store is not None else Counter()
    out = {}
    for kind, name in (("", "cells"), ("capped ", "capped_cells")):
        loads = [meta.get("others_cores") for k, meta in m.meta.items() if (len(k) == 2) == (kind == "")]
        read = [x for x in loads if x is not None]
        out[name] = {"reused_from_cache": c[kind + "cache"], "reused_from_results": c[kind + "results"],
                     "run": c[kind + "run"], "rerun_other_regime": c[kind + "other regime"],
                     "rerun_busy": c[kind + "busy"],
                     # How quiet the machine was: cores other processes kept busy during each cell.
                     "others_cores": {"max": max(read, default=None), "over_0.1": sum(x > 0.1 for x in read),
                                      "unread": len(loads) - len(read)}}
    return out
