"""bench.cli_speed: forced pairs through `qroute run`, against the fake models (no timing asserted)."""

from __future__ import annotations

import json

from conftest import FAKE_CONFIG


def test_cli_speed_runs_every_pair_and_records_how(tmp_path, monkeypatch):
    from bench import cli_speed

    def fake_qroute():
        import sys
        return [sys.executable, "-m", "qroute_cli", "--config", str(FAKE_CONFIG)]

    monkeypatch.setattr(cli_speed, "qroute_cmd", fake_qroute)
    out = tmp_path / "cli_speed.json"
    assert cli_speed.main(["--verifier", "fake-big", "--pairs", "fake-big+ngram,fake-big+small", "--rounds", "2",
                           "-n", "12", "--out", str(out)]) == 0
    got = json.loads(out.read_text())
    assert {"commit", "date", "machine", "threads", "command"} <= set(got["provenance"])
    rows = {(r["prompt"], r["pair"]): r for r in got["rows"]}
    assert set(rows) == {(p, q) for p in cli_speed.PROMPTS
                         for q in ("fake-big", "fake-big+ngram", "fake-big+small", cli_speed.AGAIN)}
    for (prompt, pair), r in rows.items():
        assert len(r["runs"]) == 2 and r["decode_tokens_per_s"] > 0
        lo, hi = r["x_plain_decode_95"]
        assert r["x_plain_decode_range"][0] <= lo <= r["x_plain_decode"] <= hi <= r["x_plain_decode_range"][1]
        if pair == "fake-big":
            assert r["x_plain_decode"] == 1.0 and r["acceptance"] is None
        if pair == cli_speed.AGAIN:  # plain run a second time: same text, no drafts
            assert r["acceptance"] is None and r["same_text_as_plain"] == 1.0
        assert 0.0 <= r["same_text_as_plain"] <= 1.0 and r["tokens"] > 0


def test_median_interval_brackets_the_median():
    from bench.cli_speed import median_interval

    lo, hi = median_interval([0.9, 1.0, 1.1, 1.0, 0.95])
    assert 0.9 <= lo <= 1.0 <= hi <= 1.1
    assert median_interval([1.0] * 5) == (1.0, 1.0)


def test_report_tells_a_slower_pair_from_noise():
    from bench.write_report import cli_speed_section

    def row(pair, med, ci, acc=None):
        return {"prompt": "p", "pair": pair, "decode_tokens_per_s": 10.0, "x_plain_decode": med,
                "x_plain_decode_range": [ci[0] - 0.01, ci[1] + 0.01], "x_plain_decode_95": list(ci),
                "x_plain_latency": 1.0, "acceptance": acc, "same_text_as_plain": 1.0}

    data = {"max_tokens": 128, "rounds": 5, "provenance": {}, "rows": [
        row("v", 1.0, (1.0, 1.0)), row("v+ngram", 0.93, (0.90, 0.97), 0.4), row("v+small", 0.80, (0.78, 0.83), 0.2),
        row("v+other", 0.97, (0.94, 1.0), 0.5), row("v+third", 0.99, (0.96, 1.0), 0.5),
        row("plain again", 0.97, (0.93, 1.02))]}
    text = "\n".join(cli_speed_section(data))
    assert "0.93 (0.90–0.97; 0.89–0.98)" in text
    # By the median two of four pass; by the interval's lower end only the one clear of 0.95.
    assert "2 of 4 speculative rows decode at 0.95x plain or better" in text
    assert "by the median; 1 of 4 by the lower end of its 95% interval" in text
    assert "p 0.97x (95% 0.93–1.02)" in text  # the noise floor, from the plain-again row
    assert "Of the 2 rows below 0.95x, 1 has its whole 95% interval below it (p v+small); the intervals" in text
