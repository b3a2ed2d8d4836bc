"""`qroute models add`: concurrent adds keep every entry, a failed add rolls back only itself."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from conftest import ROOT
from qroute_cli import paths
from qroute_cli.config import load_registry


def _gguf(tmp_path):
    path = tmp_path / "own.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 64)
    return path


def _add(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qroute_cli", "models", "add", *args, "--no-hash"],
                            cwd=ROOT, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _finish(procs: list[subprocess.Popen]) -> list[tuple[int, str, str]]:
    return [(p.wait(120), *p.communicate()) for p in procs]


def test_six_concurrent_adds_keep_all_six(tmp_path):
    gguf = _gguf(tmp_path)
    results = _finish([_add(f"mine-{i}", str(gguf)) for i in range(6)])
    assert all(rc == 0 and "Added" in out for rc, out, _ in results), results
    reg = load_registry()
    assert {f"mine-{i}" for i in range(6)} <= set(reg.models)
    assert {f"mine-{i}" for i in range(6)} <= set(reg.pairs)
    target = paths.user_config_file()
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert sorted(p.name for p in target.parent.iterdir()) == ["models.toml", "models.toml.lock"]


def test_a_failed_add_rolls_back_only_itself_while_others_add(tmp_path):
    gguf = _gguf(tmp_path)
    procs = []
    for i in range(3):
        procs.append(_add(f"good-{i}", str(gguf)))
        procs.append(_add(f"bad-{i}", str(gguf), "--pair-with", "no-such-drafter"))
    results = _finish(procs)
    good, bad = results[0::2], results[1::2]
    assert all(rc == 0 for rc, _, _ in good), good
    assert all(rc == 2 and "no-such-drafter" in err for rc, _, err in bad), bad
    names = set(load_registry().models)
    assert {f"good-{i}" for i in range(3)} <= names
    assert not any(n.startswith("bad-") for n in names)


def test_a_name_that_is_not_a_file_name_is_refused(tmp_path):
    rc, out, err = _finish([_add("../../escape", str(_gguf(tmp_path)))])[0]
    assert rc == 2 and "cannot be used as a file name" in err and "Traceback" not in err
    assert not paths.user_config_file().exists()
