"""The one featurizer shared by predictor training and serving."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from qroute_cli.routing.features import N_DENSE, TASK_TYPES, Featurizer, FeaturizerConfig


@pytest.fixture(scope="module")
def feat() -> Featurizer:
    return Featurizer()


def test_hashed_shape_norm_and_determinism(feat):
    prompts = ["What is 17 * 23?", "Write a story about a lighthouse.", ""]
    x = feat.hashed(prompts)
    assert x.shape == (3, feat.config.n_buckets + N_DENSE + len(TASK_TYPES)) and x.dtype == np.float32
    norms = np.linalg.norm(x[:, : feat.config.n_buckets], axis=1)
    assert norms[0] == pytest.approx(1.0, abs=1e-5) and norms[1] == pytest.approx(1.0, abs=1e-5)
    assert norms[2] == 0.0  # the empty prompt has no n-grams, and does not divide by zero
    assert np.array_equal(x, feat.hashed(prompts))
    assert not np.allclose(x[0], x[1])


def test_hashing_is_stable_across_processes(feat):
    """Python's hash() is salted per process; serving must see the slots training saw."""
    code = ("from qroute_cli.routing.features import Featurizer; import numpy as np;"
            "x = Featurizer().hashed(['stable hashing please']); print(np.flatnonzero(x[0, :4096]).tolist())")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout for _ in range(2)}
    here = np.flatnonzero(feat.hashed(["stable hashing please"])[0, :4096]).tolist()
    assert runs == {str(here) + "\n"}


def test_bigrams_change_features(feat):
    cfg = FeaturizerConfig(bigrams=False)
    uni = Featurizer(feat.tokenizer_path, cfg)
    a, b = "dog bites man", "man bites dog"
    assert np.allclose(uni.hashed([a]), uni.hashed([b]))  # same bag of words
    assert not np.allclose(feat.hashed([a]), feat.hashed([b]))  # word order seen through bigrams


def test_dense_features_follow_the_prompt(feat):
    d = feat.dense(["Tom has 3 apples and 5 pears. How many?", "def f(x): return {x: [1]}", "hello"])
    names = dict(zip(["log_tokens", "log_chars", "digit_frac", "numbers", "question", "log_lines", "upper_frac", "code_chars"], d.T))
    assert names["numbers"][0] == pytest.approx(0.2) and names["question"][0] == 1.0
    assert names["code_chars"][1] > names["code_chars"][0] and names["code_chars"][2] == 0.0
    assert names["log_tokens"][0] > names["log_tokens"][2]


def test_encoder_inputs_pad_and_truncate(feat):
    short, long = "hi", "word " * 500
    ids, mask = feat.encoder_inputs([short, long])
    assert ids.shape == mask.shape == (2, feat.config.max_len)
    assert ids[0, 0] == feat.cls_id and mask[0].sum() == 3 and ids[0, 2] == feat.sep_id
    assert ids[1, -1] == feat.sep_id and mask[1].all()


def test_config_round_trips_and_ignores_unknown_keys():
    cfg = FeaturizerConfig(n_buckets=128, max_len=64)
    assert FeaturizerConfig.from_json({**cfg.to_json(), "future_key": 1}) == cfg


def test_the_router_labels_runs_with_the_featurizers_task_type():
    """One task label: the predictor's task terms and the router's per-task averages agree."""
    from qroute_cli.routing import features, router

    assert router.task_type is features.task_type


def test_task_columns_follow_the_router_task_type(feat):
    """The predictor's task one-hots are the router's task types, one per prompt."""
    from qroute_cli.routing.router import task_type

    prompts = ["Tom has 3 apples and buys 4 more. How many apples does he have?", "who wrote the iliad",
               "Write a story about a dragon", "def add(a, b): return a+b  -- add type hints"]
    x = feat.hashed(prompts)
    onehot = x[:, feat.task_start:]
    assert onehot.shape == (4, len(TASK_TYPES)) and np.array_equal(onehot.sum(1), np.ones(4))
    assert [TASK_TYPES[i] for i in onehot.argmax(1)] == [task_type(p) for p in prompts] == list(TASK_TYPES)
    assert np.array_equal(x[:, feat.dense_start: feat.task_start], feat.dense(prompts))


def test_files_made_before_task_columns_keep_their_width():
    """A predictor file whose metadata predates the task columns gets the features it was trained on."""
    old = FeaturizerConfig.from_json({"n_buckets": 4096, "bigrams": True, "max_hash_tokens": 1024, "max_len": 128})
    assert not old.tasks and old.n_features == 4096 + N_DENSE
    assert Featurizer(config=old).hashed(["hi"]).shape == (1, 4096 + N_DENSE)
