"""predictor.relabel: n-gram labels recomputed from stored answers, through the real pool."""

from __future__ import annotations

import pytest

from predictor.datagen import append_row, read_rows
from predictor.relabel import RULE, relabel
from qroute_cli.generation import engine
from qroute_cli.generation.runner import prompt_tokens, user_messages


def _row(key: str, prompt: str, text: str, acceptance: float, **extra) -> dict:
    return {"key": key, "dataset": "wp", "id": key, "model": "fake-big", "prompt": prompt, "text": text,
            "acceptance": {"fake-big+ngram": acceptance, "fake-big+small": 0.5}, **extra}


def test_relabel_recomputes_ngram_labels_by_the_engines_rule(tmp_path, fake_registry, fake_pool):
    path = tmp_path / "rows.jsonl.gz"
    text = "the cat sat on the mat and the cat sat on the mat again"
    append_row(path, _row("a", "Repeat: the cat sat on the mat", text, 0.1234))
    append_row(path, _row("b", "x", "y", 0.5, acceptance_rule=RULE))  # already on the rule: kept
    assert relabel(path, fake_registry) == 1
    rows = {r["key"]: r for r in read_rows(path)}
    backend = fake_pool.get("fake-big")
    ptoks = prompt_tokens(backend, fake_registry.model("fake-big"), user_messages(rows["a"]["prompt"]))[0]
    want, coverage = engine.ngram_stats(ptoks, backend.tokenize(text, add_bos=False, special=False))
    a = rows["a"]
    assert coverage > 0 and want is not None  # the repeated phrase gives the lookup drafts
    assert a["acceptance_rule"] == RULE
    assert a["acceptance"]["fake-big+ngram"] == (None if want is None else pytest.approx(want, abs=1e-4))
    assert a["ngram_coverage"]["fake-big+ngram"] == pytest.approx(coverage, abs=1e-4)
    assert a["acceptance"]["fake-big+small"] == 0.5  # model-drafter labels are not n-gram arithmetic
    assert rows["b"]["acceptance"]["fake-big+ngram"] == 0.5 and "ngram_coverage" not in rows["b"]
    assert relabel(path, fake_registry) == 0  # idempotent
