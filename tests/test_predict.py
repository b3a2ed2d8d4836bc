"""The ONNX predictor at run time: key mapping, ranges, failure messages, the shipped file."""

from __future__ import annotations

import time

import numpy as np
import pytest

from conftest import require_module
from qroute_cli.routing import predict
from qroute_cli.errors import QrouteError

PROMPTS = [
    "Natalia sold clips to 48 friends in April and half as many in May. How many in total?",
    "Who wrote the lyrics of he ain't heavy he's my brother?",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Write a Python function that reverses a linked list.",
    "hi",
]


@pytest.fixture
def tiny(tmp_path):
    """A random-weight predictor trained on the fake registry's names."""
    require_module("onnx")
    from predictor import export

    path = tmp_path / "p" / "predictor.onnx"
    path.parent.mkdir()
    heads = export.random_predictor(path, ["fake-big", "fake-small"], ["fake-big+fake-small", "fake-big+ngram", "other+ngram"])
    return path, heads


def test_keys_follow_the_registry(tiny, fake_registry):
    path, _ = tiny
    scorer = predict.load_default(fake_registry, path)
    pred = scorer.predict("What is 2 + 2?")
    assert set(pred.quality) == set(pred.length) == {"fake-big", "fake-small"}  # fake-other: no opinion
    # Acceptance is keyed by pair name: "fake-big+small" is (fake-big, drafter fake-small).
    assert set(pred.acceptance) == {"fake-big+small", "fake-big+ngram"}
    assert pred.scorer == scorer.name == "random-0"


def test_outputs_match_numpy_and_stay_in_range(tiny, fake_registry):
    from qroute_cli.routing.features import Featurizer, FeaturizerConfig

    path, heads = tiny
    scorer = predict.load_default(fake_registry, path)
    preds = scorer.predict_many(PROMPTS)
    x = Featurizer(path.parent / "tokenizer.json", FeaturizerConfig(n_buckets=256)).hashed(PROMPTS)
    ref = heads.outputs(x)
    got_q = np.array([[p.quality["fake-big"], p.quality["fake-small"]] for p in preds])
    got_len = np.array([[p.length["fake-big"], p.length["fake-small"]] for p in preds])
    assert np.allclose(got_q, ref["quality"], atol=1e-5)
    assert np.allclose(got_len, ref["length"], rtol=1e-4)
    for p in preds:
        assert all(0.0 <= v <= 1.0 for v in list(p.quality.values()) + list(p.acceptance.values()))
        assert all(v >= 1.0 for v in p.length.values())


def test_missing_file_is_a_clear_error(tmp_path, fake_registry):
    with pytest.raises(predict.PredictorMissingError) as exc:
        predict.load_default(fake_registry, tmp_path / "nope.onnx")
    assert isinstance(exc.value, QrouteError)
    assert "not found" in exc.value.message and "predictor.train" in exc.value.hint


def test_corrupt_file_is_a_clear_error(tmp_path, fake_registry):
    bad = tmp_path / "predictor.onnx"
    bad.write_bytes(b"this is not an onnx file" * 10)
    with pytest.raises(predict.PredictorCorruptError) as exc:
        predict.load_default(fake_registry, bad)
    assert str(bad) in exc.value.message and exc.value.hint


def test_truncated_file_is_corrupt(tiny, fake_registry):
    path, _ = tiny
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(predict.PredictorCorruptError):
        predict.load_default(fake_registry, path)


def test_onnx_without_metadata_is_corrupt(tmp_path, fake_registry):
    onnx = require_module("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("quality", TensorProto.FLOAT, ["n", 4])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["features"], ["quality"])], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path = tmp_path / "predictor.onnx"
    onnx.save(model, str(path))
    with pytest.raises(predict.PredictorCorruptError) as exc:
        predict.load_default(fake_registry, path)
    assert "metadata" in exc.value.message


def test_missing_tokenizer_is_a_clear_error(tiny, fake_registry):
    path, _ = tiny
    (path.parent / "tokenizer.json").unlink()
    with pytest.raises(predict.PredictorMissingError) as exc:
        predict.load_default(fake_registry, path)
    assert "tokenizer" in exc.value.message


def test_default_scorer_warns_and_falls_back(tmp_path, fake_registry):
    from qroute_cli.routing.scoring import default_scorer

    warnings: list[str] = []
    scorer = default_scorer(fake_registry, warnings.append, tmp_path / "missing.onnx")
    assert scorer.name == "prior" and len(warnings) == 1 and "priors" in warnings[0]
    assert scorer.predict("x").quality["fake-big"] == pytest.approx(0.8)


def test_env_var_chooses_the_file(tmp_path, monkeypatch, fake_registry):
    monkeypatch.setenv("QROUTE_PREDICTOR", str(tmp_path / "elsewhere.onnx"))
    assert predict.default_path() == tmp_path / "elsewhere.onnx"
    with pytest.raises(predict.PredictorMissingError):
        predict.load_default(fake_registry)


def test_shipped_predictor_is_real_small_and_fast(real_registry):
    """The file inside the package: loads with onnxruntime, predicts every built-in verifier."""
    assert predict.DEFAULT_FILE.exists(), "run: python -m predictor.train"
    size = predict.DEFAULT_FILE.stat().st_size
    assert size < 5_000_000, f"shipped predictor is {size} bytes"
    scorer = predict.load_default(real_registry, predict.DEFAULT_FILE)
    verifiers = {p.verifier for p in real_registry.pairs.values()}
    drafted = {p.name for p in real_registry.pairs.values() if p.drafter != "none"}
    preds = scorer.predict_many(PROMPTS)
    for p in preds:
        assert set(p.quality) == set(p.length) == verifiers
        assert set(p.acceptance) == drafted
        assert all(0.0 <= v <= 1.0 for v in list(p.quality.values()) + list(p.acceptance.values()))
        assert all(1.0 <= v <= 4096 for v in p.length.values())
    # Different prompts get different predictions (the model is not a constant).
    assert len({round(p.quality["qwen2.5-coder-1.5b"], 6) for p in preds}) > 1
    scorer.predict(PROMPTS[0])  # warm up
    times = []
    for prompt in PROMPTS * 4:
        t0 = time.perf_counter()
        scorer.predict(prompt)
        times.append((time.perf_counter() - t0) * 1000)
    # About 0.3 ms on a 2-core VM: 10 ms fails only for a real regression (a far bigger model,
    # a session built per call), not for a busy machine.
    assert float(np.median(times)) < 10.0, f"shipped predictor {scorer.name}: p50 {np.median(times):.3f} ms"


def test_routing_overhead_with_the_shipped_predictor(real_registry, tmp_path):
    """What `Router.decide` adds per prompt with the shipped ONNX predictor over every built-in
    pair: features, the ONNX run, latency estimates and the decision. Routing reads no model
    file, so fakes stand in for the GGUF files (none is needed); the predictor is the real one."""
    import io
    from dataclasses import replace

    from rich.console import Console

    from qroute_cli.generation.runner import user_messages
    from qroute_cli.routing.latency import ModelProfile, Profile, current_machine
    from qroute_cli.routing.router import Router
    from qroute_cli.routing.runlog import Store

    models = {name: replace(spec, path="fake://seed=1") for name, spec in real_registry.models.items()}
    reg = replace(real_registry, models=models)
    costs = {}
    for i, (name, spec) in enumerate(models.items()):  # any plausible costs: routing only reads them
        step = 0.02 * (i + 1)
        costs[name] = ModelProfile(name, spec.identity, prefill_base_s=0.05, prefill_tps=500.0, decode_s=step,
                                   verify_s=tuple(step * (1 + 0.1 * k) for k in range(1, 9)), draft_token_s=step)
    scorer = predict.load_default(reg, predict.DEFAULT_FILE)
    with Store(tmp_path / "runs.sqlite") as store:
        router = Router(reg, budget_s=5.0, profile=Profile(current_machine(), costs, ngram_s=1e-4), scorer=scorer,
                        store=store, console=Console(file=io.StringIO()))
        router.decide(user_messages(PROMPTS[0]), max_tokens=64)  # warm up
        decisions = [router.decide(user_messages(p), max_tokens=64) for p in PROMPTS * 10]
    assert all(len(d.candidates) == len(reg.pairs) for d in decisions)
    # The trained predictor answered (the per-model priors would give every prompt one quality).
    assert len({round(d.candidates[0].predicted_quality, 6) for d in decisions}) > 1
    overhead = sorted(d.overhead_ms for d in decisions)
    # Under 1 ms on a 2-core VM; 20 ms is still far below one generated token of the 1.5B.
    assert 0 < overhead[len(overhead) // 2] < 20.0


def test_training_pipeline_end_to_end(tmp_path, fake_registry):
    """predictor.train on a small synthetic table: CV figures, export check, a loadable file."""
    require_module("sklearn", extra="train")
    require_module("onnx")
    import json

    from predictor import datagen, train

    rng = np.random.default_rng(0)
    data = tmp_path / "rows.jsonl.gz"
    shipped = datagen.read_rows(datagen.DEFAULT_OUT)  # real training prompts, in the repository
    for d, base in (("gsm8k", 0.6), ("nq", 0.3), ("wp", 0.1)):
        prompts = list({r["id"]: r["prompt"] for r in shipped if r["dataset"] == d}.items())[:8]
        for row_id, prompt in prompts:
            for m, skill in (("fake-big", 1.0), ("fake-small", 0.4)):
                datagen.append_row(data, {
                    "key": f"{d}:{row_id}:{m}", "dataset": d, "id": row_id, "model": m, "prompt": prompt,
                    "output_tokens": int(rng.integers(5, 200)),
                    "acceptance": {"fake-big+ngram": float(rng.random())} if m == "fake-big" else {},
                    "scores": {"quality": float(min(1.0, base * skill + 0.1 * rng.random()))},
                })
    ship = tmp_path / "ship" / "predictor.onnx"
    rc = train.main(["--data", str(data), "--no-encoder", "--no-human", "--folds", "3", "--build-dir", str(tmp_path / "build"),
                     "--ship-to", str(ship), "--results", str(tmp_path / "cv.json")])
    assert rc == 0
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert cv["data"]["prompts"] == 24 and cv["shipped"] in train.ARCHS
    made = cv["provenance"]  # what made the results file: commit, date, machine, threads, command
    assert made["date"] and made["machine"] and made["threads"] == 1
    assert made["command"].startswith("python -m predictor.train --data ") and made["commit"]
    assert {"hashed-ridge", "hashed-mlp", "task-ridge", "task-mean", "length-only"} <= set(cv["results"])
    assert all(e["max_abs_diff_vs_numpy"] < 1e-4 for e in cv["exported"].values())
    assert "length-only" in cv["exported"] and (tmp_path / "build" / "length-only.onnx").exists()
    # fake-big is better everywhere: the predictor must rank it first on held-out prompts.
    assert cv["results"]["hashed-ridge"]["all"]["better_of_two"]["accuracy"] > 0.8
    pred = predict.load_default(fake_registry, ship).predict("What is 3 + 4?")
    assert pred.quality["fake-big"] > pred.quality["fake-small"]
    assert set(pred.acceptance) == {"fake-big+ngram"}


def test_shipped_onnx_and_the_numpy_featurizer_agree():
    """The shipped graph computes what the numpy model training fitted computes, on the numpy
    featurizer's features: prompts of every task type (its task terms and difficulty scores)."""
    require_module("onnx")
    import onnxruntime as ort

    from predictor import export
    from qroute_cli.routing.features import Featurizer, FeaturizerConfig

    scorer = predict.load_default(None, predict.DEFAULT_FILE)
    feat = Featurizer(predict.DEFAULT_FILE.parent / "tokenizer.json", FeaturizerConfig.from_json(scorer.meta["featurizer"]))
    x = feat.hashed(PROMPTS)
    if feat.config.tasks:  # the four task types are all among the prompts
        assert set(x[:, feat.task_start:].argmax(1)) == {0, 1, 2, 3}
    heads = export.linear_heads_from_onnx(predict.DEFAULT_FILE)
    want = heads.outputs(x)
    sess = ort.InferenceSession(str(predict.DEFAULT_FILE), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"features": x})))
    for key, ref in want.items():
        assert np.allclose(got[key], ref, rtol=1e-4, atol=1e-4), key
    # And the scorer the router uses reads the same numbers.
    q = np.array([[p.quality[v] for v in scorer.verifiers] for p in scorer.predict_many(PROMPTS)])
    assert np.allclose(q, want["quality"], atol=1e-4)


def test_task_terms_export_matches_numpy(tmp_path):
    """Per-task terms (task one-hot x dense columns and clipped difficulty scores, masked) in
    the graph equal the numpy forward pass."""
    require_module("onnx")
    from predictor import export
    from qroute_cli.routing.features import Featurizer, FeaturizerConfig

    feat = Featurizer(config=FeaturizerConfig(n_buckets=256))
    rng = np.random.default_rng(1)
    n_in, k = feat.n_features, 2
    diff = export.Dense(rng.normal(0, 3, (n_in, k)).astype(np.float32), rng.normal(0, 1, k).astype(np.float32))
    mask = np.ones((4, 2 + k), np.float32)
    mask[2:, 2:] = 0.0
    terms = export.TaskTerms(diff, (feat.dense_start, feat.dense_start + 3), tuple(range(feat.task_start, feat.task_start + 4)), mask)
    n_out = 2 * 2 + 1
    heads = export.Heads([export.Dense(rng.normal(0, 0.1, (n_in + terms.n_terms, n_out)).astype(np.float32),
                                       np.full(n_out, 0.5, np.float32))], 2, 1, terms=terms)
    meta = {"name": "t", "inputs": "hashed", "featurizer": feat.config.to_json(), "tokenizer": "tokenizer.json",
            "verifiers": ["a", "b"], "acceptance_keys": ["a+ngram"]}
    path = tmp_path / "t.onnx"
    export.save(export.build(heads, meta, n_features=n_in), path)
    x = feat.hashed(PROMPTS)
    assert np.abs(terms.scores(x)).max() <= terms.clip  # the clip is exercised
    assert export.check(path, {"features": x}, heads.outputs(x), atol=1e-4) < 1e-4
    back = export.linear_heads_from_onnx(path)
    assert np.allclose(back.raw(x), heads.raw(x), atol=1e-5)


def test_calibration_export_matches_numpy(tmp_path):
    """The per-task calibration of the quality outputs in the graph equals the numpy forward
    pass, reads back, and changes what an uncalibrated graph says."""
    require_module("onnx")
    from predictor import export
    from qroute_cli.routing.features import Featurizer, FeaturizerConfig

    feat = Featurizer(config=FeaturizerConfig(n_buckets=256))
    rng = np.random.default_rng(2)
    n_in, n_out = feat.n_features, 2 * 2 + 1
    cal = export.Calibration(tuple(range(feat.task_start, feat.task_start + 4)),
                             rng.uniform(0, 1, (4, 2)).astype(np.float32), rng.uniform(0, 0.5, (4, 2)).astype(np.float32))
    layer = export.Dense(rng.normal(0, 0.1, (n_in, n_out)).astype(np.float32), np.full(n_out, 0.5, np.float32))
    heads = export.Heads([layer], 2, 1, calibration=cal)
    meta = {"name": "c", "inputs": "hashed", "featurizer": feat.config.to_json(), "tokenizer": "tokenizer.json",
            "verifiers": ["a", "b"], "acceptance_keys": ["a+ngram"]}
    path = tmp_path / "c.onnx"
    export.save(export.build(heads, meta, n_features=n_in), path)
    x = feat.hashed(PROMPTS)
    assert export.check(path, {"features": x}, heads.outputs(x), atol=1e-4) < 1e-4
    back = export.linear_heads_from_onnx(path)
    assert np.allclose(back.raw(x), heads.raw(x), atol=1e-5)
    plain = export.Heads([layer], 2, 1).outputs(x)
    assert np.abs(plain["quality"] - heads.outputs(x)["quality"]).max() > 0.05
    assert np.array_equal(plain["length"], heads.outputs(x)["length"])  # quality only


def _math_and_qa(n: int, noisy_qa: bool):
    """n math prompts whose quality falls with their length, alternating with n QA prompts of
    quality 0.1 (or, `noisy_qa`, of random quality and length): (featurizer, quality, x, y with
    a constant length column)."""
    from qroute_cli.routing.features import Featurizer

    feat = Featurizer()
    rng = np.random.default_rng(0)
    prompts, quality = [], []
    for i in range(n):
        k = int(rng.integers(3, 40))
        prompts.append("Tom has 3 apples. " + "He buys more apples at the shop. " * k + "How many apples in total?")
        quality.append(0.9 - 0.02 * k)
        if noisy_qa:
            prompts.append("who wrote the song number %d" % i + " and when" * int(rng.integers(0, 6)))
            quality.append(float(rng.uniform(0, 0.4)))
        else:
            prompts.append("who wrote the song number %d" % i)
            quality.append(0.1)
    x = feat.hashed(prompts)
    return feat, quality, x, np.column_stack([quality, np.log1p(np.full(len(prompts), 50.0))])


def test_calibration_keeps_a_tasks_ranking_and_flattens_a_task_it_cannot_rank():
    """Math quality follows question length, QA quality is noise: the calibrated fit keeps the
    math ranking and predicts about the QA mean for every QA prompt, where the uncalibrated one
    spreads QA predictions by chance."""
    require_module("sklearn", extra="train")
    from predictor import train
    from qroute_cli.routing.features import TASK_TYPES

    feat, quality, x, y = _math_and_qa(60, noisy_qa=True)
    f = train.fit_arch("task-linear-cal", feat, x, None, y, 1, 0, None)
    raw = train.fit_arch("task-linear", feat, x, None, y, 1, 0, None)
    cal = f.heads.calibration
    math, qa = TASK_TYPES.index("math"), TASK_TYPES.index("qa")
    assert cal.scale[math, 0] > 0.8 and cal.scale[qa, 0] < 0.3
    math_rows, qa_rows = np.arange(0, len(quality), 2), np.arange(1, len(quality), 2)
    p = f.raw(x, None)[:, 0]
    assert np.corrcoef(p[math_rows], np.array(quality)[math_rows])[0, 1] > 0.9
    assert p[qa_rows].std() < 0.5 * raw.raw(x, None)[qa_rows, 0].std()
    assert abs(p[qa_rows].mean() - np.mean(np.array(quality)[qa_rows])) < 0.03
    assert np.allclose(f.raw(x, None)[:, 1], raw.raw(x, None)[:, 1])  # lengths are the base's


def test_a_task_keeps_the_chosen_share_of_its_spread_and_its_mean():
    """keep_spread scales each task group's spread around its mean, per verifier, and leaves
    other groups as they are."""
    from predictor import train

    q = np.array([[0.1, 0.5], [0.3, 0.7], [0.9, 0.2], [0.5, 0.4]])
    group = np.array([0, 0, 1, 1])
    out = train.keep_spread(q, group, {0: 0.0, 1: 0.5})
    assert np.allclose(out[:2], [[0.2, 0.6], [0.2, 0.6]])  # the group's mean for every prompt
    assert np.allclose(out[2:].mean(axis=0), q[2:].mean(axis=0))
    assert np.allclose(out[2] - out[3], 0.5 * (q[2] - q[3]))
    assert np.array_equal(train.keep_spread(q, group, {0: 0.0})[2:], q[2:])


def test_a_smaller_share_is_kept_only_for_more_than_a_tie():
    """The full spread stays unless a smaller share routes better by more than KEEP_TIE."""
    from predictor import train

    tie = train.KEEP_TIE
    assert train.choose_share({1.0: 1.10, 0.5: 1.10 + tie / 2, 0.0: 1.10 + tie * 0.9}) == 1.0
    assert train.choose_share({1.0: 0.92, 0.5: 0.92, 0.0: 1.00}) == 0.0
    assert train.choose_share({1.0: 0.90, 0.5: 1.00, 0.0: 1.00 + tie / 2}) == 0.5


def test_a_head_swap_replaces_one_head_on_the_tasks_rows_only():
    """head_swap's swapped() takes one head from the other scorer on the given rows and leaves
    the other heads, the other rows and its inputs untouched; head_fit reads the length ratio
    against what was measured, skipping unmeasured lengths."""
    from predictor import head_swap, train

    base = {k: np.zeros((3, 2)) for k in head_swap.HEADS}
    other = {k: np.ones((3, 2)) for k in head_swap.HEADS}
    rows = np.array([True, False, True])
    out = head_swap.swapped(base, other, rows, "length")
    assert np.array_equal(out["length"], [[1, 1], [0, 0], [1, 1]])
    assert not out["quality"].any() and not out["acceptance"].any() and not base["length"].any()

    t = train.Table(prompts=["a", "b", "c"], datasets=np.array(["gsm8k"] * 3), ids=["1", "2", "3"],
                    verifiers=[head_swap.STRONG, head_swap.WEAK], acc_keys=[],
                    quality=np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]]), acceptance=np.zeros((3, 0)),
                    length=np.array([[100.0, np.nan], [200.0, 50.0], [400.0, 50.0]]))
    pred = {"quality": np.array([[0.9, 0.1], [0.1, 0.2], [0.8, 0.7]]), "acceptance": np.zeros((3, 0)),
            "length": np.array([[50.0, 10.0], [100.0, 25.0], [200.0, 25.0]])}
    fit = head_swap.head_fit(t, pred, np.ones(3, dtype=bool))
    assert fit["length_pred_over_measured_median"] == {head_swap.STRONG: 0.5, head_swap.WEAK: 0.5}
    assert fit["quality_spearman"][head_swap.STRONG] > 0.8


def test_the_shipped_spread_is_a_calibration_the_graph_computes(tmp_path):
    """with_keep flattens the QA spread of a fitted model to its mean on the training prompts,
    keeps the math ranking, and its exported graph says what numpy says."""
    require_module("sklearn", extra="train")
    require_module("onnx")
    from predictor import export, train
    from qroute_cli.routing.features import TASK_TYPES

    feat, quality, x, y = _math_and_qa(40, noisy_qa=True)
    for arch in ("task-linear", "task-linear-cal"):  # with and without a calibration to start from
        f = train.fit_arch(arch, feat, x, None, y, 1, 0, None)
        heads = train.with_keep(f.heads, feat, x, None, {"qa": 0.0, "math": 1.0})
        math_rows, qa_rows = np.arange(0, len(quality), 2), np.arange(1, len(quality), 2)
        before, after = f.raw(x, None)[:, 0], heads.raw(x)[:, 0]
        assert np.ptp(after[qa_rows]) < 1e-5 and abs(after[qa_rows].mean() - before[qa_rows].mean()) < 1e-5
        assert np.allclose(after[math_rows], before[math_rows], atol=1e-5)
        assert heads.calibration.scale[TASK_TYPES.index("qa"), 0] == 0.0
        meta = {"name": arch, "inputs": "hashed", "featurizer": feat.config.to_json(), "tokenizer": "tokenizer.json",
                "verifiers": ["a"], "acceptance_keys": []}
        path = tmp_path / f"{arch}.onnx"
        export.save(export.build(heads, meta, n_features=feat.n_features), path)
        assert export.check(path, {"features": x}, heads.outputs(x), atol=1e-4) < 1e-4


def test_task_terms_learn_the_within_task_slope():
    """Longer math questions are answered worse, yet math prompts are longer and better answered
    than QA prompts: a pooled slope on length gets the within-math order backwards, per-task
    terms get it right."""
    require_module("sklearn", extra="train")
    from predictor import train

    feat, quality, x, y = _math_and_qa(40, noisy_qa=False)
    math_rows = np.arange(0, len(quality), 2)
    preds = {}
    for arch in ("length-only", "task-linear"):
        f = train.fit_arch(arch, feat, x, None, y, 1, 0, None)
        preds[arch] = f.raw(x, None)[math_rows, 0]
    truth = np.array(quality)[math_rows]
    assert np.corrcoef(preds["length-only"], truth)[0, 1] < 0  # the across-task slope, applied within
    assert np.corrcoef(preds["task-linear"], truth)[0, 1] > 0.9


def test_lengths_cut_at_an_older_cap_are_imputed_above_it(tmp_path):
    """GSM8K answers made at the old 256 cap that ended by length are right-censored: their
    length at today's cap is above 256 and at most today's cap; finished answers keep theirs."""
    require_module("scipy", extra="train")
    from predictor import datagen, train
    from qroute_cli.evaluation.tasks import TASKS

    data = tmp_path / "rows.jsonl.gz"
    rng = np.random.default_rng(0)
    for i in range(30):
        cut = i % 3 == 0
        tokens = 256 if cut else int(rng.integers(120, 250))
        datagen.append_row(data, {"key": f"gsm8k:train-{i}:m", "dataset": "gsm8k", "id": f"train-{i}", "model": "m",
                                  "prompt": f"q{i}", "output_tokens": tokens, "max_tokens": 256,
                                  "finish_reason": "length" if cut else "stop", "scores": {"quality": 0.0}})
    t = train.load_table(data)
    cap = TASKS["gsm8k"].max_tokens
    cut = t.censored[:, 0]
    assert cut.sum() == 10
    assert np.all(t.length_now[cut, 0] > 256) and np.all(t.length_now[cut, 0] <= cap)
    assert np.array_equal(t.length_now[~cut, 0], t.length[~cut, 0])


def test_user_phrased_rows_teach_the_length_head_how_long_unbounded_answers_run(tmp_path, fake_registry):
    """Bench prompts carry an answer-format instruction and get short answers; the same questions
    asked as a user would get long ones. With user-phrased rows the exported length head expects
    long answers for unseen user-phrased prompts and still short ones for the bench's; quality
    stays the bench rows' fit; the held-out check says the user rows help there."""
    require_module("sklearn", extra="train")
    require_module("onnx")
    import json

    from predictor import datagen, train

    data = tmp_path / "rows.jsonl.gz"
    shipped = datagen.read_rows(datagen.DEFAULT_OUT)
    user_of = {"gsm8k": lambda p: p.split("\n")[0], "nq": lambda p: p.split("\n")[0],
               "wp": lambda p: p.replace("a very short story (under 100 words)", "a story")}
    held_out = []
    for d in ("gsm8k", "nq", "wp"):
        prompts = list({r["id"]: r["prompt"] for r in shipped if r["dataset"] == d and r.get("phrasing", "bench") == "bench"}.items())[:16]
        for i, (row_id, prompt) in enumerate(prompts):
            asked = [("bench", prompt, 30)] + ([("user", user_of[d](prompt), 240)] if i < 12 else [])
            for phrasing, text, tokens in asked:
                for m in ("fake-big", "fake-small"):
                    datagen.append_row(data, {
                        "key": datagen.row_key(d, row_id, m, phrasing), "dataset": d, "id": row_id, "model": m,
                        "phrasing": phrasing, "prompt": text, "output_tokens": tokens, "max_tokens": 256,
                        "finish_reason": "stop", "acceptance": {},
                        "scores": {"quality": 0.8 if m == "fake-big" else 0.3},
                    })
            if i >= 12:
                held_out.append((prompt, user_of[d](prompt)))
    ship = tmp_path / "ship" / "predictor.onnx"
    rc = train.main(["--data", str(data), "--no-human", "--folds", "3", "--ship", "task-ridge-nodiff",
                     "--build-dir", str(tmp_path / "build"), "--ship-to", str(ship), "--results", str(tmp_path / "cv.json")])
    assert rc == 0
    cv = json.loads((tmp_path / "cv.json").read_text())
    assert cv["data"]["prompts"] == 48 and cv["data"]["user_phrased"] == {"gsm8k": 12, "nq": 12, "wp": 12}
    scorer = predict.load_default(fake_registry, ship)
    for bench_prompt, user_prompt in held_out:  # questions no row of either phrasing had
        bench, user = scorer.predict(bench_prompt), scorer.predict(user_prompt)
        assert bench.length["fake-big"] < 60 and user.length["fake-big"] > 120
        assert abs(bench.quality["fake-big"] - 0.8) < 0.1
    check = cv["user_lengths"]["on"]
    for d in ("gsm8k", "nq", "wp"):
        with_user, without = check["user"][d]["fake-big"]["both"], check["user"][d]["fake-big"]["bench"]
        assert with_user["mean_abs_log"] < without["mean_abs_log"]
        assert without["median_ratio"] > 3  # bench rows alone: user answers run far longer than predicted


def test_a_user_phrased_answer_cut_at_its_cap_is_not_censored(tmp_path):
    """Its cap is the one `qroute run` gives: the cut length is the length the user gets."""
    require_module("scipy", extra="train")
    from predictor import datagen, train

    data = tmp_path / "rows.jsonl.gz"
    for i in range(6):
        for phrasing in ("bench", "user"):
            datagen.append_row(data, {"key": datagen.row_key("gsm8k", f"train-{i}", "m", phrasing), "dataset": "gsm8k",
                                      "id": f"train-{i}", "model": "m", "phrasing": phrasing, "prompt": f"q{i} {phrasing}",
                                      "output_tokens": 256, "max_tokens": 256, "finish_reason": "length",
                                      "scores": {"quality": 0.0}})
    bench, user = train.load_table(data), train.load_table(data, phrasing="user")
    assert len(bench.prompts) == len(user.prompts) == 6
    assert bench.censored.all() and not user.censored.any()
    assert np.array_equal(user.length_now, user.length)


def test_the_routing_value_weighs_every_task_alike_however_many_rows_it_has():
    """Training tasks differ in size (NQ has far more rows than GSM8K); the bench has the same
    number of prompts per task, so the routing value's all-task means weigh tasks alike."""
    from predictor.routing_value import Curves

    # Task A: 1 prompt, task B: 3 prompts; one budget, one static pair.
    lat = np.array([[1.0, 3.0, 3.0, 3.0]])
    qual = np.array([[1.0, 0.0, 0.0, 0.0]])
    plain = Curves(lat, qual, lat, qual)
    balanced = Curves(lat, qual, lat, qual, weight=np.array([1.0, 1 / 3, 1 / 3, 1 / 3]))
    every = np.arange(4)
    assert plain.points(every)[0] == [(2.5, 0.25)]
    assert np.allclose(balanced.points(every)[0], [(2.0, 0.5)])
    assert balanced.points(np.array([1, 2]))[0] == [(3.0, 0.0)]  # within a task: plain means


# -- the prior scorer's per-task acceptance (predictor/priors.py) ----------------------

def test_prior_scorer_drafts_each_pair_by_its_tasks_mean_acceptance(real_registry):
    from qroute_cli.routing.features import task_type
    from qroute_cli.routing.scoring import PriorScorer, acceptance_priors

    table = acceptance_priors()
    code, question = PROMPTS[3], PROMPTS[1]
    assert (task_type(code), task_type(question)) == ("code", "qa")
    scorer = PriorScorer(real_registry)
    on_code, on_question = scorer.predict(code).acceptance, scorer.predict(question).acceptance
    drafting = [p for p in real_registry.pairs.values() if p.drafter != "none" and not p.remote]
    assert drafting and set(on_code) >= {p.name for p in drafting}  # every built-in drafting pair has a rate
    for p in drafting:
        rates = table[f"{p.verifier}+{p.drafter}"]
        assert on_code[p.name] == rates["code"] and on_question[p.name] == rates["qa"]
        assert 0.0 < on_question[p.name] < on_code[p.name] < 1.0  # n-gram and model drafts both copy code best
    assert not any(p.drafter == "none" for p in map(real_registry.pair, on_code))


def test_the_packaged_acceptance_table_is_made_from_the_training_rows():
    """The table ships beside the predictor: it must be the means of the committed rows the
    shipped predictor was trained on (predictor/results/cv.json lists them), as
    predictor.train writes them."""
    import json

    from predictor import datagen, priors, train

    packaged = json.loads(priors.OUT.read_text())
    keys = set(json.loads((train.RESULTS / "cv.json").read_text())["data"]["keys"])
    rows = datagen.read_rows(datagen.DEFAULT_OUT)
    assert packaged["acceptance"] == priors.acceptance_table(rows, keys)["acceptance"]
    assert packaged["provenance"]["command"].startswith("python -m predictor.")


def test_training_can_be_held_to_the_prompts_an_earlier_run_read():
    """--prompts-of keeps the table's rows whose dataset:id an earlier results file lists, and
    the acceptance table then reads only those prompts."""
    from predictor import priors, train

    t = train.Table(prompts=["a", "b", "c"], datasets=np.array(["nq", "nq", "gsm8k"]), ids=["1", "2", "1"],
                    verifiers=["v"], acc_keys=["v+d"], quality=np.array([[0.1], [0.2], [0.3]]),
                    acceptance=np.array([[0.5], [0.6], [0.7]]), length=np.array([[1.0], [2.0], [3.0]]))
    kept = train.only_prompts(t, {"nq:2", "gsm8k:1"})
    assert kept.prompts == ["b", "c"] and list(kept.datasets) == ["nq", "gsm8k"]
    assert np.array_equal(kept.quality, [[0.2], [0.3]])
    rows = [{"dataset": "nq", "id": str(i), "acceptance": {"v+d": 0.1 * i}} for i in range(1, 31)]
    every = priors.acceptance_table(rows)["prompts"]["v+d"]["*"]
    some = priors.acceptance_table(rows, {f"nq:{i}" for i in range(1, 21)})
    assert (every, some["prompts"]["v+d"]["*"]) == (30, 20)
    assert some["acceptance"]["v+d"]["qa"] == round(sum(0.1 * i for i in range(1, 21)) / 20, 4)


def test_without_the_table_the_drafter_kinds_prior_stands(real_registry, monkeypatch, tmp_path):
    from qroute_cli.routing import features, scoring
    from qroute_cli.routing.latency import PRIOR_ACCEPTANCE
    from qroute_cli.routing.latency import Profile, current_machine
    from qroute_cli.routing.online import OnlineEstimates, estimate
    from conftest import model_profile

    pair = real_registry.pair("smollm2-135m+ngram")
    profile = Profile(current_machine(), {"smollm2-135m": model_profile(
        "smollm2-135m", 0.01, identity=real_registry.models["smollm2-135m"].identity)}, ngram_s=1e-5)
    with_table = scoring.PriorScorer(real_registry).predict(PROMPTS[3])
    monkeypatch.setattr(features, "PREDICTOR_DIR", tmp_path)  # no acceptance.json there
    scoring.acceptance_priors.cache_clear()
    try:
        without = scoring.PriorScorer(real_registry).predict(PROMPTS[3])
    finally:
        scoring.acceptance_priors.cache_clear()
    assert without.acceptance == {}
    est = lambda pred: estimate(profile, real_registry, OnlineEstimates(), pair.name, chars=60, task="code",  # noqa: E731
                                prediction=pred, max_tokens=64).acceptance
    assert est(without) == PRIOR_ACCEPTANCE["ngram"]
    assert est(with_table) == with_table.acceptance[pair.name] != PRIOR_ACCEPTANCE["ngram"]


def test_the_report_shows_a_fit_not_shipped_beside_the_shipped_one():
    """predictor.report's section on the fit of all committed prompts names what grew, what the
    dev split picked, and one row per bench replay with the predictor file it routed with."""
    from predictor import report

    verifiers = ["a", "b"]
    q = {v: {"spearman": 0.2, "spearman_ci": [0.1, 0.3]} for v in verifiers}
    fit = {"data": {"per_dataset": {"nq": 1000, "wp": 300}, "verifiers": verifiers},
           "shipped": "task-ridge", "results": {"task-ridge": {"nq": {"quality": q}, "wp": {"quality": q}}},
           "selection": {"keep": {"chosen": {"qa": 0.5}, "with_chosen": {"all": {"hypervolume_ratio": 1.2},
                                                                        "nq": {"hypervolume_ratio": 1.0}}}},
           "provenance": {"command": "python -m predictor.train", "commit": "abc", "date": "today"}}
    shipped = {"data": {"per_dataset": {"nq": 300, "wp": 300}}}

    def replay(ratio, predictor=None):
        r = {"all": {"hypervolume_ratio_vs_static_frontier": ratio,
                     "ablation": {"quality+online": {"hypervolume_ratio_vs_static_frontier": ratio - 0.1}}},
             "by_task": {"nq": {"hypervolume_ratio_vs_static_frontier": ratio}}, "provenance": {}}
        if predictor:
            r["provenance"]["predictor"] = {"file": predictor}
        return r

    text = "\n".join(report.all_data_lines(fit, shipped, [("bench", replay(1.23)), ("bench", replay(1.21, "x.onnx")),
                                                          ("nq200", None)]))
    assert "nq 300 -> 1000 prompts" in text and "wp" not in text.split("prompts)")[0]
    assert "**task-ridge**" in text and "qa 0.5" in text
    rows = [line for line in text.splitlines() if line.startswith("| bench |")]
    assert len(rows) == 2 and "x.onnx" in rows[1] and "1.230" in rows[0] and "1.110" in rows[1]


def test_a_results_file_names_the_rows_its_training_read(tmp_path):
    """table_of gives the rows a results file's training read, though the data file has grown
    since; a results file without keys gets every row."""
    import gzip
    import json

    from predictor import train

    rows = [{"key": f"nq:{i}:v", "dataset": "nq", "id": str(i), "model": "v", "prompt": f"q{i}?", "text": "a",
             "output_tokens": 3, "max_tokens": 48, "finish_reason": "stop", "acceptance": {},
             "scores": {"quality": 0.5}} for i in range(4)]
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert train.table_of({"data": {"verifiers": ["v"], "keys": ["nq:1", "nq:3"]}}, path).ids == ["1", "3"]
    assert len(train.table_of({"data": {"verifiers": ["v"]}}, path).ids) == 4
