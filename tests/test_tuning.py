"""The tuning constants' one home, and the small helpers that each have one definition:
percentile, softmax, JSON Lines, hash-while-copy, model presence, the progress bar."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FAKE_CONFIG
from qroute_cli import tuning
from qroute_cli.config import Registry
from qroute_cli.generation.engine import DraftController
from qroute_cli.jsonl import parse_jsonl, read_jsonl
from qroute_cli.models import cache
from qroute_cli.numeric import percentile, quantile, softmax
from qroute_cli.types import GenerationConfig, ModelSpec, Pair


# -- tuning ---------------------------------------------------------------------------


def test_the_draft_bound_is_one_number_for_engine_config_and_calibration():
    from qroute_cli.routing.calibrate import QUICK, measure_model
    from qroute_cli.generation.backends.fake import FakeBackend

    bound = tuning.DRAFTING.max_len
    assert GenerationConfig().draft_max == bound and DraftController().k_max == bound
    prof = measure_model(FakeBackend(seed=1), "m", "m", QUICK, drafter=False)
    assert len(prof.verify_s) == bound  # the latency model knows verify costs up to the bound


def test_draft_max_beyond_what_the_latency_model_knows_is_a_usage_error():
    r = subprocess.run([sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG), "run", "hi",
                        "--pair", "fake-big+ngram", "--draft-max", str(tuning.DRAFTING.max_len + 8)],
                       capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert r.returncode == 2 and "--draft-max" in r.stderr


def test_tuning_groups_are_frozen():
    with pytest.raises(AttributeError):
        tuning.DRAFTING.max_len = 16  # type: ignore[misc]


# -- percentile and softmax ---------------------------------------------------------


def test_percentile_is_nearest_rank():
    values = list(range(20, 0, -1))  # 1..20, unsorted
    assert percentile(values, 95) == 19  # 19 of 20 values (95%) are <= 19
    assert percentile(values, 50) == 10  # the lower middle for an even count: a value some run had
    assert percentile(values, 100) == 20 and percentile(values, 1) == 1
    assert percentile([3.5], 95) == 3.5
    assert percentile([1, 2, 3], 50) == 2
    with pytest.raises(ValueError):
        percentile([], 50)


def test_softmax_is_a_distribution_at_any_scale():
    logits = np.array([1000.0, 999.0, -1000.0], dtype=np.float32)  # exp() would overflow unshifted
    p = softmax(logits)
    assert p.dtype == np.float64 and p.sum() == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(np.e)
    assert softmax(logits, temperature=0.5)[0] / softmax(logits, temperature=0.5)[1] == pytest.approx(np.e ** 2)
    assert softmax(np.array([2.0, 1.0]), temperature=0.0).tolist() == [1.0, 0.0]  # floored, not a division by 0


# -- JSON Lines -----------------------------------------------------------------------


def test_read_jsonl_plain_and_gzip(tmp_path):
    text = '{"a": 1}\n\n  \n{"a": "x\u2028y"}\n'  # blank lines skipped; U+2028 stays inside its string
    plain, packed = tmp_path / "rows.jsonl", tmp_path / "rows.jsonl.gz"
    plain.write_text(text, encoding="utf-8")
    packed.write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_jsonl(plain) == read_jsonl(packed) == [{"a": 1}, {"a": "x\u2028y"}]
    assert parse_jsonl(text) == [{"a": 1}, {"a": "x\u2028y"}]


def test_a_broken_line_raises_unless_skipped():
    text = '{"a": 1}\n{"a": \n{"a": 3}\n'  # the middle line was cut by an interrupted write
    with pytest.raises(ValueError):
        parse_jsonl(text)
    assert parse_jsonl(text, skip_broken=True) == [{"a": 1}, {"a": 3}]


# -- hash while copying ---------------------------------------------------------------


def test_copy_hashed_writes_hashes_and_reports_every_byte():
    data = bytes(range(256)) * 1000
    out, seen = io.BytesIO(), []
    digest = hashlib.sha256()
    n = cache.copy_hashed(io.BytesIO(data), out, digest, seen.append, chunk=4096)
    assert n == len(data) == sum(seen) and out.getvalue() == data
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert max(seen) == 4096
    only_hash = hashlib.sha256()
    assert cache.copy_hashed(io.BytesIO(data), None, only_hash) == len(data)
    assert only_hash.hexdigest() == digest.hexdigest()


# -- model presence and identity ------------------------------------------------------


def test_installed_pairs_need_every_model(tmp_path, monkeypatch):
    monkeypatch.setenv("QROUTE_MODELS", str(tmp_path / "models"))
    present = tmp_path / "present.gguf"
    present.write_bytes(b"GGUF")
    models = {
        "fake": ModelSpec("fake", path="fake://seed=1"),
        "here": ModelSpec("here", path=str(present)),
        "gone": ModelSpec("gone", sha256="ab" * 32),  # in the (empty) cache
    }
    pairs = {
        "fake": Pair("fake", "fake"),
        "here+ngram": Pair("here+ngram", "here", "ngram"),
        "here+gone": Pair("here+gone", "here", "gone"),
    }
    reg = Registry(models=models, pairs=pairs)
    assert [p.name for p in cache.installed_pairs(reg)] == ["fake", "here+ngram"]
    assert cache.installed(models["fake"]) and not cache.installed(models["gone"])
    assert pairs["here+gone"].model_names == ("here", "gone") and pairs["here+ngram"].model_names == ("here",)
    assert models["gone"].identity == "ab" * 32 and models["here"].identity == str(present)
    assert models["fake"].is_fake and not models["here"].is_fake


# -- progress bar ---------------------------------------------------------------------


def test_progress_bar_has_the_named_columns():
    from rich.console import Console
    from rich.progress import DownloadColumn, MofNCompleteColumn, TimeElapsedColumn

    from qroute_cli.render import progress_bar

    out = io.StringIO()
    bar = progress_bar("count", "elapsed", console=Console(file=out, width=100))
    kinds = [type(c) for c in bar.columns]
    assert MofNCompleteColumn in kinds and TimeElapsedColumn in kinds and DownloadColumn not in kinds
    with bar:
        task = bar.add_task("work", total=3)
        bar.advance(task, 3)
    assert "3/3" in out.getvalue()
    with pytest.raises(KeyError):
        progress_bar("nonsense")


def test_quantile_interpolates_as_numpy_does():
    rng = np.random.default_rng(3)
    for n in (1, 2, 5, 37):
        values = list(rng.normal(size=n))
        for q in (0.0, 0.1, 0.5, 0.9, 1.0):
            assert quantile(values, q) == pytest.approx(float(np.quantile(values, q)), abs=1e-12)
    with pytest.raises(ValueError):
        quantile([], 0.5)
