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
    ('[defaults]\npair = "nope"\n', "unknown key 'defaults.pair'"),
    ('[defaults]\npair = "nope"\n', "--strategy static:PAIR"),  # a removed key says what to do instead
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


@pytest.mark.parametrize("text, needle", [
    ('[models.x]\npath = "x.gguf"\nstop = [1, 2]\n', "'models.x.stop' must be a list of strings"),
    ('[models.x]\npath = "x.gguf"\nprompt_format = "completion"\ntemplate = "Q: {prompt} {"\n',
     "'models.x.template' is not a valid template"),
    ('[models.x]\npath = "x.gguf"\nprompt_format = "completion"\ntemplate = "{prompt} {answer}"\n',
     "'models.x.template' is not a valid template"),
    ('[models.x]\npath = "x.gguf"\nn_ctx = -5\n', "'models.x.n_ctx' must be at least 1, got -5"),
    ('[models.x]\npath = "x.gguf"\nn_ctx = 0\n', "'models.x.n_ctx' must be at least 1"),
    ('[models.x]\npath = "x.gguf"\nquality_prior = 2\n', "'models.x.quality_prior' must be between 0 and 1"),
    ('[models.x]\npath = "x.gguf"\npypi = { packages = [1] }\n', "'models.x.pypi.packages' must be a list of strings"),
    ('[defaults]\nmax_tokens = -1\n', "'defaults.max_tokens' must be at least 1"),
    ('defaults = 3\n', "'defaults' must be a table"),
    ('models = "x"\n', "'models' must be a table"),
])
def test_invalid_values_name_the_key(tmp_path, text, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_registry(cfg, include_user=False)
    assert needle in info.value.message and str(cfg) in info.value.message


def test_a_template_with_doubled_braces_is_fine(tmp_path):
    cfg = tmp_path / "ok.toml"
    cfg.write_text('[models.x]\npath = "x.gguf"\nprompt_format = "completion"\n'
                   'template = "{system}JSON {{\\"q\\": \\"{prompt}\\"}}"\n')
    assert load_registry(cfg, include_user=False).model("x").template.startswith("{system}JSON {{")


def test_unreadable_config_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="is a directory"):
        load_registry(tmp_path, include_user=False)
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b'[models.x]\ndescription = "caf\xe9"\npath = "x.gguf"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_registry(latin1, include_user=False)


def test_config_reads_toml_without_tomllib():
    """Python 3.10 has no tomllib: the declared `tomli` (same API) must be enough."""
    import subprocess
    import sys

    code = ("import sys, tomllib; sys.modules['tomli'] = tomllib; sys.modules['tomllib'] = None;"
            "from qroute_cli import config;"
            "assert config.tomllib is sys.modules['tomli'];"
            "reg = config.load_registry(None, include_user=False); print(len(reg.models))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 4
