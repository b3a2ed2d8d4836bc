"""Real llama.cpp: a synthetic 2-layer GGUF, smollm2-135m, and a smoke test of the Qwen pair."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import MODELS_DIR, require_model
from qroute_cli.config import load_registry
from qroute_cli.generation.pool import ModelPool
from qroute_cli.generation.runner import prompt_tokens, run_prompt, user_messages
from qroute_cli.types import GenerationConfig

pytestmark = pytest.mark.real

CODE_EDIT = (
    "Add type hints to this function and keep everything else the same:\n\n"
    "def total_price(items, tax_rate):\n"
    "    subtotal = 0\n"
    "    for item in items:\n"
    "        subtotal += item.price * item.quantity\n"
    "    return subtotal * (1 + tax_rate)\n"
)


def assert_same_up_to_near_ties(backend, prompt, plain, spec, margin=2.0):
    """Speculative output must equal plain output, except where llama.cpp's batched and
    single-token logits (which differ by up to ~1.5 here) flip a near-tie between the top
    two tokens. Then, at the first difference, both tokens must be within `margin` logits
    of each other under single-token decoding. Returns the agreeing prefix length.
    """
    a, b = list(plain.tokens), list(spec.tokens)
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    if a == b:
        return n
    backend.truncate(0)
    backend.eval(list(prompt) + a[:n][:-1] if n else list(prompt)[:-1], logits="none") if (n or len(prompt) > 1) else None
    last = (a[n - 1] if n else prompt[-1])
    row = backend.eval([last], logits="last")[0]
    alt = b[n] if n < len(b) else None
    if alt is None or n >= len(a):
        # One stopped early (an EOS near-tie): the other's token must be near the EOS logit.
        other = a[n] if n < len(a) else b[n]
        top = float(row.max())
        assert top - float(row[other]) < margin or backend.is_eog(int(row.argmax())), (n, top, row[other])
    else:
        assert abs(float(row[a[n]]) - float(row[alt])) < margin, (n, row[a[n]], row[alt])
    print(f"speculative == plain for the first {n} of {len(a)} tokens, then a near-tie flipped")
    return n


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    """Registry with the synthetic model (same tokenizer as smollm2) added from a user file."""
    from synth_gguf import write_tiny_llama

    source = require_model("smollm2-135m")
    folder = tmp_path_factory.mktemp("tiny")
    tiny = write_tiny_llama(source, folder / "tiny.gguf")
    cfg = folder / "models.toml"
    cfg.write_text(
        f'[models.tiny]\npath = "{tiny}"\nvocab = "smollm2"\nvocab_size = 49152\nn_ctx = 512\n\n'
        '[pairs.tiny]\nverifier = "tiny"\n\n[pairs."tiny+ngram"]\nverifier = "tiny"\ndrafter = "ngram"\n\n'
        '[pairs."smollm2-135m+tiny"]\nverifier = "smollm2-135m"\ndrafter = "tiny"\n'
    )
    return load_registry(cfg, include_user=False)


@pytest.fixture(scope="module")
def tiny_pool(tiny_registry):
    import os

    os.environ["QROUTE_MODELS"] = str(MODELS_DIR)
    with ModelPool(tiny_registry) as pool:
        yield pool


def test_tiny_gguf_loads_and_generates(tiny_pool):
    gen = run_prompt(tiny_pool, tiny_pool.registry.pair("tiny"), user_messages("Hello there"),
                     GenerationConfig(max_tokens=20))
    assert gen.stats.output_tokens > 0
    assert gen.stats.prompt_tokens > 5
    assert gen.stats.latency_s > 0 and gen.stats.ttft_s <= gen.stats.latency_s


def test_batched_logits_agree_with_single_steps(tiny_pool):
    """Verification relies on batch logits; measure how far they are from one-token steps."""
    backend = tiny_pool.get("tiny")
    tokens = backend.tokenize("The quick brown fox jumps over the lazy dog again and again")
    backend.truncate(0)
    batched = backend.eval(tokens, logits="all")
    backend.truncate(0)
    single = np.concatenate([backend.eval([t], logits="last") for t in tokens])
    agree = float(np.mean(batched.argmax(1) == single.argmax(1)))
    max_diff = float(np.abs(batched - single).max())
    print(f"batched vs single-step: argmax agreement {agree:.3f}, max |diff| {max_diff:.2e}")
    assert agree >= 0.9
    assert max_diff < 1e-1


def test_kv_truncate_then_recompute_is_consistent(tiny_pool):
    backend = tiny_pool.get("tiny")
    tokens = backend.tokenize("one two three four five six")
    backend.truncate(0)
    full = backend.eval(tokens, logits="last")
    backend.truncate(3)
    again = backend.eval(tokens[3:], logits="last")
    assert backend.tokens == tokens
    assert int(full.argmax()) == int(again.argmax())


def test_ngram_speculation_equals_plain_on_real_model(smollm_pool):
    pair_plain = smollm_pool.registry.pair("smollm2-135m")
    pair_ngram = smollm_pool.registry.pair("smollm2-135m+ngram")
    cfg = GenerationConfig(max_tokens=64, adaptive=False)
    a = run_prompt(smollm_pool, pair_plain, user_messages(CODE_EDIT), cfg)
    b = run_prompt(smollm_pool, pair_ngram, user_messages(CODE_EDIT), cfg)
    assert b.stats.drafted > 0 and b.stats.accepted > 0
    prompt, _ = prompt_tokens(smollm_pool.get("smollm2-135m"), smollm_pool.registry.model("smollm2-135m"),
                              user_messages(CODE_EDIT))
    assert assert_same_up_to_near_ties(smollm_pool.get("smollm2-135m"), prompt, a, b) >= 20


def test_model_draft_equals_plain_on_real_model(tiny_registry, tiny_pool):
    """smollm2 verifies drafts of the synthetic model (same tokenizer): output unchanged."""
    cfg = GenerationConfig(max_tokens=32, adaptive=False, draft_min_prob=0.0, draft_max=4)
    a = run_prompt(tiny_pool, tiny_registry.pair("smollm2-135m"), user_messages("List three colours."), cfg)
    b = run_prompt(tiny_pool, tiny_registry.pair("smollm2-135m+tiny"), user_messages("List three colours."), cfg)
    assert b.stats.drafted > 0
    prompt, _ = prompt_tokens(tiny_pool.get("smollm2-135m"), tiny_registry.model("smollm2-135m"),
                              user_messages("List three colours."))
    assert assert_same_up_to_near_ties(tiny_pool.get("smollm2-135m"), prompt, a, b) >= 8


def _pinned(pool, backend, threads):
    """A pool over one loaded model with a fixed thread count, as `--threads N` makes."""
    backend.set_threads(threads)
    return ModelPool(pool.registry, n_threads=threads, loader=lambda spec: backend)


def test_sampling_with_seed_is_reproducible(smollm_pool):
    """qroute's promise: with a seed, the same command on the same machine and thread count
    gives the same text, sampled or greedy, with a drafter. (The drafting schedule then
    follows acceptance only, so the verify batches do not depend on timing.)"""
    backend = smollm_pool.get("smollm2-135m")
    start = backend.threads
    pool = _pinned(smollm_pool, backend, 1)  # one thread: quick on a busy machine too
    pair = pool.registry.pair("smollm2-135m+ngram")
    msgs = user_messages("Write a haiku about rain.")

    def command(cfg):
        backend.truncate(0)  # a new process starts with an empty KV cache
        return run_prompt(pool, pair, msgs, cfg)

    for cfg in (GenerationConfig(max_tokens=24, temperature=0.8, seed=42),
                GenerationConfig(max_tokens=24, temperature=0.0, seed=1)):
        a, b = command(cfg), command(cfg)
        assert a.tokens == b.tokens and a.text == b.text
        assert (a.stats.draft_steps, a.stats.drafted) == (b.stats.draft_steps, b.stats.drafted)
    c = command(GenerationConfig(max_tokens=24, temperature=0.8, seed=7))
    assert c.stats.output_tokens > 0
    assert backend.threads == 1
    backend.set_threads(start)


def test_pool_reuses_loaded_models(smollm_pool):
    first = smollm_pool.get("smollm2-135m")
    assert smollm_pool.get("smollm2-135m") is first
    assert "smollm2-135m" in smollm_pool.loaded()


def test_chat_template_from_gguf(smollm_pool):
    spec = smollm_pool.registry.model("smollm2-135m")
    backend = smollm_pool.get("smollm2-135m")
    text, _ = backend.render(user_messages("hi", "Be brief."))
    assert "<|im_start|>system\nBe brief." in text and text.rstrip().endswith("<|im_start|>assistant")
    tokens, _ = prompt_tokens(backend, spec, user_messages("hi", "Be brief."))
    im_start = backend.tokenize("<|im_start|>", add_bos=False)
    assert len(im_start) == 1 and tokens.count(im_start[0]) == 3  # special tokens, not text


def test_prompt_too_long_is_a_clear_error(smollm_pool):
    from qroute_cli.errors import PromptTooLongError

    with pytest.raises(PromptTooLongError, match="context"):
        run_prompt(smollm_pool, smollm_pool.registry.pair("smollm2-135m"), user_messages("word " * 5000),
                   GenerationConfig(max_tokens=8))
    # The pool still works afterwards.
    gen = run_prompt(smollm_pool, smollm_pool.registry.pair("smollm2-135m"), user_messages("Hi"),
                     GenerationConfig(max_tokens=4))
    assert gen.stats.output_tokens > 0


def test_corrupt_model_file_is_reported(tmp_path):
    from qroute_cli.errors import ModelCorruptError

    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 1000)
    cfg = tmp_path / "m.toml"
    cfg.write_text(f'[models.bad]\npath = "{bad}"\n[pairs.bad]\nverifier = "bad"\n')
    reg = load_registry(cfg, include_user=False)
    with ModelPool(reg) as pool, pytest.raises(ModelCorruptError, match="could not load"):
        pool.get("bad")


@pytest.mark.qwen
def test_qwen_pair_smoke():
    """The natural pair: 0.5B drafts for 1.5B; speculative output equals plain output."""
    require_model("qwen2.5-coder-1.5b")
    require_model("qwen2.5-coder-0.5b")
    import os

    os.environ["QROUTE_MODELS"] = str(MODELS_DIR)
    reg = load_registry(None, include_user=False)
    cfg = GenerationConfig(max_tokens=24, adaptive=False, draft_max=4)
    msgs = user_messages("Write a Python function that returns the square of a number.")
    with ModelPool(reg) as pool:
        plain = run_prompt(pool, reg.pair("qwen2.5-coder-1.5b"), msgs, cfg)
        spec = run_prompt(pool, reg.pair("qwen2.5-coder-1.5b+0.5b"), msgs, cfg)
        ngram = run_prompt(pool, reg.pair("qwen2.5-coder-1.5b+ngram"), msgs, cfg)
    assert plain.stats.output_tokens == 24
    assert spec.stats.drafted > 0 and spec.stats.accepted > 0
    assert "def" in plain.text
    with ModelPool(reg) as pool:
        verifier = pool.get("qwen2.5-coder-1.5b")
        prompt, _ = prompt_tokens(verifier, reg.model("qwen2.5-coder-1.5b"), msgs)
        assert assert_same_up_to_near_ties(verifier, prompt, plain, spec) >= 12
        assert assert_same_up_to_near_ties(verifier, prompt, plain, ngram) >= 12
    # --draft-gpu-layers: the drafter drafts from a copy of its own, loaded with its own layers
    # (offloaded where the build has a GPU; the same CPU layers here).
    with ModelPool(reg, draft_gpu_layers=-1) as pool:
        apart = run_prompt(pool, reg.pair("qwen2.5-coder-1.5b+0.5b"), msgs, cfg)
        assert sorted(pool.loaded()) == ["qwen2.5-coder-0.5b (draft)", "qwen2.5-coder-1.5b"]
        assert apart.stats.drafted > 0 and apart.stats.accepted > 0
        verifier = pool.get("qwen2.5-coder-1.5b")
        assert assert_same_up_to_near_ties(verifier, prompt, plain, apart) >= 12


def test_thread_count_changes_between_answers_on_real_model(smollm_pool):
    """llama.cpp takes a new thread count per answer. Thread count changes the order of
    llama.cpp's float sums, so greedy answers agree only up to a near-tie (on some CPUs they
    are identical, on others they part at a near-tie)."""
    backend = smollm_pool.get("smollm2-135m")
    pair = smollm_pool.registry.pair("smollm2-135m")
    msgs = user_messages("Name three colours.")
    cfg = GenerationConfig(max_tokens=10, temperature=0.0)
    start = backend.threads
    one = run_prompt(_pinned(smollm_pool, backend, 1), pair, msgs, cfg)
    assert backend.threads == 1
    again = run_prompt(_pinned(smollm_pool, backend, start), pair, msgs, cfg)
    assert backend.threads == start
    assert one.stats.output_tokens > 0 and again.stats.output_tokens > 0
    prompt, _ = prompt_tokens(backend, smollm_pool.registry.model("smollm2-135m"), msgs)
    assert_same_up_to_near_ties(backend, prompt, one, again) >= 0


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="the GNU C++ runtime is Linux's")
def test_the_cxx_runtime_is_global_before_llama_cpp_loads():
    """A CUDA build of llama.cpp crashes reading a tokenizer when numpy (or onnxruntime) brought
    the C++ runtime in first, privately (bench/REPORT.md, GPU section). Importing the backend puts
    the runtime in the global symbol scope first, even after numpy."""
    import subprocess
    import sys

    probe = ("import numpy, ctypes\n{}\nprint(hasattr(ctypes.CDLL(None), '_ZNSt6localeC1Ev'))")
    before = subprocess.run([sys.executable, "-c", probe.format("")], capture_output=True, text=True, check=True)
    after = subprocess.run([sys.executable, "-c", probe.format("import qroute_cli.generation.backends.llama")],
                           capture_output=True, text=True, check=True)
    assert after.stdout.strip() == "True", after.stderr
    if before.stdout.strip() == "True":
        pytest.skip("numpy's C++ runtime is global here already: nothing to tell apart")
