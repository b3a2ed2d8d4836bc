"""The bench's result matrix: every (prompt, pair) run once, scored, cached on disk.

The cache is append-only JSON Lines keyed by the pair's model hashes, the prompt and the
generation settings, so an interrupted bench resumes where it stopped and a changed model
or setting is never mixed with old results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

from qroute_cli import paths
from qroute_cli.config import Registry
from qroute_cli.evaluation.tasks import TASKS, Item
from qroute_cli.jsonl import read_jsonl
from qroute_cli.types import GenerationConfig, Pair

CACHE_VERSION = 1


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


@dataclass
class Matrix:
    items: list[Item]
    pairs: list[str]
    cells: dict[tuple[str, str], Cell] = field(default_factory=dict)

    def cell(self, item: Item, pair: str) -> Cell:
        return self.cells[(item.id, pair)]


def cell_key(registry: Registry, pair: Pair, item: Item, config: GenerationConfig) -> str:
    ident = {
        "v": CACHE_VERSION,
        "models": [registry.model(name).identity for name in pair.model_names],
        "drafter": pair.drafter_kind,
        "prompt": item.prompt,
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
        "draft_max": config.draft_max,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


def load_cache(path: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not path.exists():
        return out
    for row in read_jsonl(path, skip_broken=True):  # a line cut by a crash: that cell runs again
        if isinstance(row, dict) and "key" in row:
            out[row["key"]] = row
    return out


def run_matrix(
    pool,
    items: Sequence[Item],
    pairs: Sequence[str],
    cache_path: Path,
    *,
    on_cell: Callable[[Item, str, Cell, bool], None] | None = None,
) -> Matrix:
    """Run every (item, pair) not yet in the cache; pair-major so models load once."""
    from qroute_cli.generation.runner import run_prompt, user_messages

    registry = pool.registry
    cache = load_cache(cache_path)
    paths.private_dir(cache_path.parent)
    paths.private_file(cache_path)  # answers are kept owner-only, as every file qroute writes
    matrix = Matrix(list(items), list(pairs))
    with cache_path.open("a", encoding="utf-8") as log:
        for pair_name in pairs:
            pair = registry.pair(pair_name)
            for item in items:
                task = TASKS[item.task]
                config = GenerationConfig(max_tokens=task.max_tokens, temperature=0.0)
                key = cell_key(registry, pair, item, config)
                if key in cache:
                    cell = Cell(**cache[key]["cell"])
                    # Score again from the stored text: a metric fix applies to cached runs too.
                    scores = task.score(cell.text, item.reference)
                    cell = replace(cell, scores=scores, quality=float(scores["quality"]))
                    matrix.cells[(item.id, pair_name)] = cell
                    if on_cell:
                        on_cell(item, pair_name, cell, True)
                    continue
                gen = run_prompt(pool, pair, user_messages(item.prompt), config)
                scores = task.score(gen.text, item.reference)
                s = gen.stats
                cell = Cell(
                    quality=float(scores["quality"]), scores=scores, latency_s=s.latency_s, ttft_s=s.ttft_s,
                    tokens=s.output_tokens, prompt_tokens=s.prompt_tokens, drafted=s.drafted,
                    accepted=s.accepted, text=gen.text,
                )
                log.write(json.dumps({"key": key, "item": item.id, "pair": pair_name, "cell": asdict(cell)}) + "\n")
                log.flush()
                matrix.cells[(item.id, pair_name)] = cell
                if on_cell:
                    on_cell(item, pair_name, cell, False)
    return matrix
