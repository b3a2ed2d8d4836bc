"""models.toml loading: built-ins, user overrides, validation messages."""

from __future__ import annotations

import pytest

from qroute_cli.config import load_registry
from qroute_cli.errors import ConfigError, UsageError


def test_builtin_registry_has_required_models_and_pairs():
    reg = load_registry(None, include_user=False)
    assert {"qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "gemma-3-270m", "smollm2-135m"} <= set(reg.models)
    for name in ("qwen2.5-coder-1.5b+0.5b", "qwen2.5-coder-1.5b+ngram", "qwen2.5-coder-0.5b+ngram"):
        assert name in reg.pairs
    for model in reg.models:
        assert any(p.verifier == model and p.drafter == "none" for p in reg.pairs.values())
    assert reg.model("gemma-3-270m").prompt_format == "completion"
    assert len(reg.model("qwen2.5-coder-1.5b").pypi.packages) == 22


def test_user_file_overrides_one_key_and_adds(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[models."smollm2-135m"]\nn_ctx = 1024\n[models.mine]\npath = "mine.gguf"\n'
                   '[pairs.mine]\nverifier = "mine"\n')
    reg = load_registry(cfg, include_user=False)
    assert reg.model("smollm2-135m").n_ctx == 1024
    assert reg.model("smollm2-135m").sha256  # untouched keys survive
    assert reg.model("mine").path == str(tmp_path / "mine.gguf")  # relative to the file


def test_user_config_dir_file_is_read(qroute_home):
    from qroute_cli import paths

    paths.user_config_file().parent.mkdir(parents=True)
    paths.user_config_file().write_text('[defaults]\nbudget = "9s"\n')
    assert load_registry().defaults.budget == "9s"


@pytest.mark.parametrize("text, needle", [
    ('[modles.x]\n', "unknown table 'modles'"),
    ('[models.x]\npath = 3\n', "'models.x.path' must be a str"),
    ('[pairs.p]\nverifier = "nope"\n', "unknown verifier model 'nope'"),
    ('[pairs.p]\nverifier = "smollm2-135m"\ndrafter = "smolm2-135m"\n', "Did you mean"),
    ('[models.x]\nvocab = "a"\n', "has no source"),
    ('[models.x\n', "invalid TOML"),
    ('[defaults]\npair = "nope"\n', "defaults.pair"),
])
def test_invalid_configs_name_the_problem(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_registry(cfg, include_user=False)
    full = info.value.message + " " + (info.value.hint or "")
    assert needle in full


def test_unknown_names_suggest(fake_registry):
    with pytest.raises(UsageError) as info:
        fake_registry.pair("fake-bgi")
    assert "Did you mean 'fake-big'" in info.value.hint


def test_include_builtin_false_starts_from_nothing(fake_registry):
    assert set(fake_registry.models) == {"fake-big", "fake-small", "fake-other"}
    assert "qwen2.5-coder-1.5b+0.5b" not in fake_registry.pairs
