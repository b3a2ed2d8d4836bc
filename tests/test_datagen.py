"""Training-data generation (predictor/datagen.py), its splits and its automatic scores."""

from __future__ import annotations

import gzip
import json

import pytest

from conftest import require_model, require_source_data
from predictor import datagen
from qroute_cli.evaluation import humaneval, splits
from qroute_cli.evaluation.tasks import TASKS


@pytest.fixture
def data_root(tmp_path):
    """A tiny copy of the shared data layout: 3 rows per training set."""
    root = tmp_path / "data"
    (root / "gsm8k").mkdir(parents=True)
    (root / "nq_open").mkdir()
    (root / "writingprompts").mkdir()
    with open(root / "gsm8k" / "train.jsonl", "w") as fh:
        for i in range(3):
            fh.write(json.dumps({"question": f"Tom has {i} apples and buys 2. How many?", "answer": f"...\n#### {i + 2}"}) + "\n")
    with open(root / "nq_open" / "NQ-open.dev.jsonl", "w") as fh:
        for i in range(40):  # ~40% land on the train side of the split
            fh.write(json.dumps({"question": f"who was president number {i}", "answer": [f"person {i}"]}) + "\n")
    with open(root / "writingprompts" / "wp_train_sample500_with_gpt_completions.jsonl", "w") as fh:
        for i in range(3):
            fh.write(json.dumps({"row_id": i, "prompt": f"[ WP ] A dragon number {i} learns to knit .", "story": "Once upon a time a dragon knitted."}) + "\n")
    return root


def test_fake_run_writes_scored_rows_with_acceptance(tmp_path, data_root, fake_registry):
    out = tmp_path / "rows.jsonl.gz"
    added = datagen.run({"gsm8k": 2, "nq": 2, "wp": 1}, out, ["fake-big", "fake-small"], registry=fake_registry,
                        chunk=1, n_threads=None, data_root=data_root)
    rows = datagen.read_rows(out)
    assert added == len(rows) == 10
    assert len({r["key"] for r in rows}) == 10
    big = [r for r in rows if r["model"] == "fake-big"]
    # fake-big is drafted for by fake-small (teacher-forced) and by the n-gram drafter.
    assert all(set(r["acceptance"]) == {"fake-big+fake-small", "fake-big+ngram"} for r in big)
    assert all(r["acceptance"]["fake-big+fake-small"] is None or 0 <= r["acceptance"]["fake-big+fake-small"] <= 1 for r in big)
    assert all(r["acceptance"] == {} for r in rows if r["model"] == "fake-small")
    for r in rows:
        assert r["output_tokens"] > 0 and r["latency_s"] > 0 and "quality" in r["scores"]
    assert {r["dataset"] for r in rows} == {"gsm8k", "nq", "wp"}
    wp = next(r for r in rows if r["dataset"] == "wp")
    assert "[ WP ]" not in wp["prompt"] and "A dragon number" in wp["prompt"]


def test_resume_skips_done_rows_and_extends(tmp_path, data_root, fake_registry):
    out = tmp_path / "rows.jsonl.gz"
    kw = dict(registry=fake_registry, chunk=2, n_threads=None, data_root=data_root)
    assert datagen.run({"gsm8k": 1, "nq": 0, "wp": 0}, out, ["fake-small"], **kw) == 1
    assert datagen.run({"gsm8k": 1, "nq": 0, "wp": 0}, out, ["fake-small"], **kw) == 0
    assert datagen.run({"gsm8k": 3, "nq": 0, "wp": 0}, out, ["fake-small"], **kw) == 2
    assert len(datagen.read_rows(out)) == 3


def test_a_cut_off_write_loses_only_the_last_row(tmp_path):
    out = tmp_path / "rows.jsonl.gz"
    for i in range(3):
        datagen.append_row(out, {"key": f"k{i}"})
    raw = out.read_bytes()
    out.write_bytes(raw[:-7])  # the last gzip member is cut mid-way
    assert [r["key"] for r in datagen.read_rows(out)] == ["k0", "k1"]
    datagen.append_row(out, {"key": "k1"})  # a duplicate key, as a rerun would write
    assert datagen.pack(out) == 2
    with gzip.open(out, "rt") as fh:  # one plain gzip stream now
        assert [json.loads(line)["key"] for line in fh] == ["k0", "k1"]


def test_chunks_take_every_dataset_in_turn():
    rows = {d: [splits.Row(d, str(i), "", None) for i in range(n)] for d, n in (("a", 3), ("b", 1))}
    blocks = list(datagen.chunks(rows, 2))
    assert [[(r.dataset, r.id) for r in b] for b in blocks] == [[("a", "0"), ("a", "1"), ("b", "0")], [("a", "2")]]


def test_nq_split_is_fixed_and_about_forty_percent_train():
    # Fixed: a known question always lands on the same side, whatever its spelling.
    q = "when was the last time anyone was on the moon"
    assert splits.nq_side(q) == splits.nq_side("When was the last time anyone was on the Moon?")
    assert splits.nq_side(q) == "bench"  # moving it would mix the bench into training data
    sides = [splits.nq_side(f"who was the {i}th person to do thing number {i * 7}") for i in range(2000)]
    assert 0.36 < sides.count("train") / len(sides) < 0.44


def test_question_key_ignores_spelling_but_not_content():
    key = splits.question_key
    assert key("[ WP ] A dragon learns to knit .") == key("A Dragon learns to knit!")
    assert key("Who wrote \"Hamlet\"?") == key("who wrote hamlet")
    assert key("who wrote hamlet") != key("who wrote macbeth")


def _shipped_bench(task):
    from qroute_cli.evaluation.tasks import load

    return load(task)


def test_shipped_bench_data_is_never_training_data():
    """Every shipped bench question against the shipped keys of every training question (all
    four data sets, code included, and EVOUNA), and against the prompts the shipped predictor
    trained on."""
    trained = set().union(*splits.read_train_hashes().values())
    assert len(trained) > 10_000
    for task in splits.DATASETS:
        items = _shipped_bench(task)
        assert len(items) >= 50
        clash = [it.id for it in items if splits.question_key(it.question) in trained]
        assert not clash, f"{task} bench questions are training questions: {clash[:5]}"
        if task == "nq":
            assert all(splits.nq_side(it.question) == "bench" for it in items)
        if task == "code":
            assert all(humaneval.side(it.id) == "bench" for it in items)
    prompts = {r["prompt"] for r in datagen.read_rows(datagen.DEFAULT_OUT)}
    assert len(prompts) > 100
    bench_prompts = {it.prompt for task in splits.DATASETS for it in _shipped_bench(task)}
    assert not prompts & bench_prompts


def test_shipped_hashes_catch_a_training_question():
    """The check above can fail: a training question put into the bench is found."""
    trained = splits.read_train_hashes()
    # The predictor's committed training rows are training questions by construction.
    row = next(r for r in datagen.read_rows(datagen.DEFAULT_OUT) if r["dataset"] == "gsm8k")
    question = row["prompt"].split("\nSolve it step by step")[0]
    assert splits.question_key(question) in trained["gsm8k"]


def test_code_training_side_is_in_the_shipped_hashes_and_apart_from_the_bench():
    """HumanEval needs no source data: its training side is the problems `humaneval.side` puts
    there, every one of them has its key shipped, and no bench problem does."""
    shipped = splits.read_train_hashes()
    train = splits.train_rows("code")
    assert {r.id for r in train} == {p.task_id for p in humaneval.load() if humaneval.side(p.task_id) == "train"}
    assert shipped["code"] == {splits.question_key(r.question) for r in train} and len(shipped["code"]) == 85
    bench_rows = splits.bench_rows("code")
    bench = {splits.question_key(r.question) for r in bench_rows}
    # HumanEval/56 and /61 differ only in their bracket characters, which the key drops; both
    # are bench problems, so the 79 bench problems have 78 keys.
    assert len(bench_rows) == 79 and len(bench) == 78
    assert not bench & set().union(*shipped.values())


def test_fake_run_labels_the_code_training_side(tmp_path, data_root, fake_registry):
    """Code rows: HumanEval training problems as the bench asks them, scored pass@1 in the sandbox."""
    out = tmp_path / "rows.jsonl.gz"
    added = datagen.run({"code": 1}, out, ["fake-small"], registry=fake_registry, n_threads=None, data_root=data_root)
    (row,) = datagen.read_rows(out)
    assert added == 1 and row["dataset"] == "code" and humaneval.side(row["id"]) == "train"
    problem = next(p for p in humaneval.load() if p.task_id == row["id"])
    assert row["prompt"] == problem.chat_prompt and row["max_tokens"] == TASKS["code"].max_tokens
    assert row["scores"] == {"pass": 0.0, "quality": 0.0, "correct": 0.0}  # the fake writes no code
    assert "--code" in _datagen_help()


def _datagen_help() -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        datagen.main(["--help"])
    return buf.getvalue()


def test_splits_on_the_source_data_match_the_shipped_hashes():
    """Needs the source data sets: the split is disjoint there, and the shipped keys are up to
    date (else remake them: python -m qroute_cli.evaluation.splits --write-hashes)."""
    root = require_source_data()
    for d in splits.DATASETS:
        train = {splits.question_key(r.question) for r in splits.train_rows(d, root)}
        bench = {splits.question_key(r.question) for r in splits.bench_rows(d, root)}
        assert train and bench and not train & bench, d
    nq_train, nq_bench = splits.train_rows("nq", root), splits.bench_rows("nq", root)
    assert 0.3 < len(nq_train) / (len(nq_train) + len(nq_bench)) < 0.5
    shipped = splits.read_train_hashes()
    fresh: dict[str, set[str]] = {}
    for line in splits.hash_lines(splits.training_questions(root)):
        source, key = line.split()
        fresh.setdefault(source, set()).add(key)
    assert fresh == shipped


def test_sample_is_a_stable_prefix():
    rows = [splits.Row("x", str(i), "", None) for i in range(50)]
    assert splits.sample(rows, 10) == splits.sample(rows, 20)[:10]


def test_automatic_scores():
    gsm8k, nq_task, wp_task = TASKS["gsm8k"], TASKS["nq"], TASKS["wp"]
    assert gsm8k.score("so 5 + 3 = 8.\nThe answer is 1,200.", "1200") == {"em": 1.0, "quality": 1.0, "correct": 1.0}
    assert gsm8k.score("The answer is 12. Then 7 more", "7")["quality"] == 0.0  # 'answer is' wins
    assert gsm8k.score("no number here", "7")["correct"] == 0.0
    nq = nq_task.score("The December 1972.\nBecause Apollo 17...", ["14 December 1972 UTC", "December 1972"])
    assert nq["em"] == 1.0 and nq["f1"] == 1.0 and nq["correct"] == 1.0
    part = nq_task.score("in December", ["December 1972"])
    assert part["em"] == 0.0 and 0 < part["f1"] < 1 and part["correct"] == 1.0  # F1 0.5, the line for correct
    wp = wp_task.score("the dog ran far away", "the dog ran far away from home")
    assert 0.5 < wp["rouge_l"] < 1 and 0 < wp["bleu"] < 1 and wp["quality"] == wp["rouge_l"]
    assert "correct" not in wp  # a story has no right answer


@pytest.mark.real
def test_user_phrased_rows_ask_the_same_questions_without_the_format_instruction(tmp_path, data_root, fake_registry):
    """--user N: the first N prompts of each data set again, as a user would type them, at the
    default cap of `qroute run`; their own keys, so bench rows and user rows never collide."""
    out = tmp_path / "rows.jsonl.gz"
    kw = dict(registry=fake_registry, chunk=1, n_threads=None, data_root=data_root)
    added = datagen.run({"gsm8k": 2, "nq": 0, "wp": 0}, out, ["fake-small"], user={"gsm8k": 1, "wp": 1}, **kw)
    rows = datagen.read_rows(out)
    assert added == len(rows) == 4 and len({r["key"] for r in rows}) == 4
    bench = {r["id"]: r for r in rows if r["phrasing"] == "bench"}
    user = [r for r in rows if r["phrasing"] == "user"]
    assert len(bench) == 2 and {r["dataset"] for r in user} == {"gsm8k", "wp"}
    for r in user:
        assert r["key"] == f"{r['dataset']}:{r['id']}/user:fake-small"
        assert r["max_tokens"] == fake_registry.defaults.max_tokens
        assert "briefly" not in r["prompt"] and "under 100 words" not in r["prompt"]
    math = next(r for r in user if r["dataset"] == "gsm8k")
    assert math["id"] in bench and bench[math["id"]]["prompt"].startswith(math["prompt"])  # the same question
    assert datagen.run({"gsm8k": 2, "nq": 0, "wp": 0}, out, ["fake-small"], user={"gsm8k": 1, "wp": 1}, **kw) == 0
    assert datagen.caps_used(out)["gsm8k"] == TASKS["gsm8k"].max_tokens  # user rows' cap is not the task's


def test_a_code_problem_asked_as_a_user_names_the_function_and_says_what_it_does():
    from qroute_cli.evaluation.tasks import user_code_prompt

    for problem in humaneval.load("train"):
        text = user_code_prompt(problem.prompt)
        assert text.startswith(f"Write a Python function {problem.entry_point}(")
        assert "```" not in text and ">>>" not in text and '"""' not in text
        assert len(text) > len(f"Write a Python function {problem.entry_point}()") + 20  # the docstring's gist


def test_real_datagen_on_smollm(tmp_path, data_root, real_registry):
    """Two prompts answered by smollm2-135m through llama.cpp, with n-gram acceptance."""
    require_model("smollm2-135m")
    out = tmp_path / "rows.jsonl.gz"
    added = datagen.run({"gsm8k": 1, "nq": 1, "wp": 0}, out, ["smollm2-135m"], registry=real_registry,
                        chunk=1, data_root=data_root)
    rows = datagen.read_rows(out)
    assert added == len(rows) == 2
    for r in rows:
        assert r["model"] == "smollm2-135m" and r["text"].strip()
        assert 0 < r["output_tokens"] <= r["max_tokens"] and r["prompt_tokens"] > 5
        assert set(r["acceptance"]) == {"smollm2-135m+ngram"}
        acc = r["acceptance"]["smollm2-135m+ngram"]
        assert acc is None or 0.0 <= acc <= 1.0
        assert 0.0 <= r["scores"]["quality"] <= 1.0


def test_workers_split_the_work_without_overlap(tmp_path, data_root, fake_registry):
    out = tmp_path / "rows.jsonl.gz"
    kw = dict(registry=fake_registry, chunk=1, n_threads=None, data_root=data_root, workers=2)
    a = datagen.run({"gsm8k": 2, "nq": 1, "wp": 0}, out, ["fake-big", "fake-small"], worker=0, **kw)
    b = datagen.run({"gsm8k": 2, "nq": 1, "wp": 0}, out, ["fake-big", "fake-small"], worker=1, **kw)
    keys = [r["key"] for r in datagen.read_rows(out)]
    assert (a, b) == (3, 3) and len(keys) == len(set(keys)) == 6


def test_rescore_recomputes_scores_from_texts(tmp_path, data_root, fake_registry):
    out = tmp_path / "rows.jsonl.gz"
    datagen.run({"gsm8k": 1, "nq": 0, "wp": 0}, out, ["fake-big"], registry=fake_registry, n_threads=None, data_root=data_root)
    row = datagen.read_rows(out)[0]
    ref = next(r.reference for r in splits.train_rows("gsm8k", data_root) if r.id == row["id"])
    row["text"] = f"work work \\(\\boxed{{{ref}}}\\) and 7 more"  # right answer, boxed, not last
    out.unlink()
    datagen.append_row(out, row)
    assert datagen.rescore(out, data_root) == 1
    assert datagen.read_rows(out)[0]["scores"]["quality"] == 1.0


def test_difficulty_models_never_saw_a_bench_question():
    """The questions the shipped predictor's difficulty models were trained on (their keys are
    committed next to the training data) are training questions, never bench questions, and
    are the ones the shipped file says it was trained on (a digest per model in its metadata)."""
    import onnx

    from predictor import difficulty, train
    from qroute_cli.routing import predict

    keys = difficulty.read_keys(train.DIFFICULTY_KEYS)
    assert set(keys) == set(difficulty.NAMES)
    shipped = splits.read_train_hashes()
    assert keys["gsm8k-steps"] <= shipped["gsm8k"] and len(keys["gsm8k-steps"]) > 7000
    assert keys["nq-evouna"] <= shipped["evouna-tq"] | shipped["evouna-nq"] and len(keys["nq-evouna"]) > 3000
    every = set().union(*keys.values())
    for task in ("gsm8k", "nq"):
        clash = [it.id for it in _shipped_bench(task) if splits.question_key(it.question) in every]
        assert not clash, f"{task} bench questions in the difficulty models' data: {clash[:5]}"
    model = onnx.load(str(predict.DEFAULT_FILE))
    meta = json.loads(next(p.value for p in model.metadata_props if p.key == predict.META_KEY))
    for m in meta.get("difficulty", []):
        assert m["keys_sha256"] == difficulty.keys_digest(keys[m["name"]]), m["name"]


def test_difficulty_keys_match_the_source_data():
    """Needs the source data: the committed keys are exactly the questions the models read now."""
    root = require_source_data()
    from predictor import difficulty, train

    keys = difficulty.read_keys(train.DIFFICULTY_KEYS)
    assert keys["gsm8k-steps"] == set(difficulty.gsm8k_steps_labels(root).keys)
    labels = difficulty.evouna_labels(root)
    assert keys["nq-evouna"] == set(labels.keys)
    assert all(splits.nq_side(p.split("?\n")[0]) == "train" for p, s in zip(labels.prompts, labels.sources) if s == "evouna-nq")
