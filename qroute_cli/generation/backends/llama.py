"""The llama.cpp backend: the only module that imports llama_cpp.

`Llama` loads the model, context and tokenizer; decoding goes through llama.cpp's batch
API directly, so logits are computed only where the engine needs them (the last prompt
token, or each position of a verify batch) and the KV cache can be trimmed after a
rejected draft.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from qroute_cli.errors import ModelCorruptError
from qroute_cli.types import Message, ModelSpec


def _cxx_runtime_first() -> None:
    """Put the C++ runtime in the process's global symbol scope before llama.cpp's libraries.

    llama-cpp-python loads its libraries with RTLD_GLOBAL. A CUDA build's libggml-cuda exports
    thousands of C++ standard-library template copies; where the C++ runtime came in earlier
    through an extension module (numpy, onnxruntime), loaded locally, llama.cpp's own code binds
    to those copies and crashes (SIGSEGV while reading a model's tokenizer, or in onnxruntime
    starting beside it). Seen on a CUDA 13 build with numpy 2.5 on Linux. Promoting the runtime
    first costs nothing where it is already loaded; elsewhere it is skipped."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libstdc++.so.6", mode=ctypes.RTLD_GLOBAL)
        except OSError:
            pass  # no GNU C++ runtime (musl, clang's libc++): nothing to put first


_cxx_runtime_first()


@contextlib.contextmanager
def _quiet_stderr():
    """llama.cpp prints load logs on fd 2 from C; keep the user's terminal clean."""
    try:
        fd = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(fd, 2)
            os.close(fd)


def _handles(llm) -> tuple[object, object]:
    """llama.cpp's context and vocabulary of a loaded `Llama`. llama-cpp-python keeps them in
    private attributes (`_ctx.ctx`, `_model.model`): this is the one place that reads them, so
    a release that renames them breaks one function."""
    import llama_cpp

    return llm._ctx.ctx, llama_cpp.llama_model_get_vocab(llm._model.model)


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class LlamaBackend:
    """One GGUF model with one KV cache (sequence 0)."""

    def __init__(self, llm, spec: ModelSpec, n_batch: int) -> None:
        import llama_cpp

        self._lib = llama_cpp
        self.llm = llm
        self.spec = spec
        self.name = spec.name
        self.n_ctx = llm.n_ctx()
        self.n_vocab = llm.n_vocab()
        self.n_batch = n_batch
        self._ctx, self._vocab = _handles(llm)
        self._memory = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        self._tokens: list[int] = []
        self._formatter = None
        self._bos_text = ""
        self._eos_text = ""
        self._closed = False
        self.threads = llm.n_threads

    def set_threads(self, n: int) -> None:
        """CPU threads for the next evals (decode and batches alike)."""
        if n != self.threads and not self._closed:
            self._lib.llama_set_n_threads(self._ctx, n, n)
            self.threads = n

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        path: Path,
        *,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        n_batch: int = 512,
    ) -> "LlamaBackend":
        from llama_cpp import Llama

        threads = n_threads or default_threads()
        try:
            with _quiet_stderr():
                llm = Llama(
                    model_path=str(path),
                    n_ctx=spec.n_ctx,
                    n_batch=n_batch,
                    n_ubatch=n_batch,
                    n_threads=threads,
                    n_threads_batch=threads,
                    n_gpu_layers=n_gpu_layers,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelCorruptError(
                f"llama.cpp could not load '{spec.name}' from {path}: {exc}",
                f"Check the file with: qroute models verify {spec.name}",
            )
        return cls(llm, spec, n_batch)

    # -- tokens -------------------------------------------------------------

    @property
    def tokens(self) -> list[int]:
        return list(self._tokens)

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = True) -> list[int]:
        if add_bos and self._bos_text and text.startswith(self._bos_text):
            add_bos = False  # the chat template already wrote BOS
        return self.llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def detokenize(self, tokens: Sequence[int]) -> bytes:
        return self.llm.detokenize(list(tokens))

    def is_eog(self, token: int) -> bool:
        return bool(self._lib.llama_vocab_is_eog(self._vocab, token))

    def render(self, messages: Sequence[Message]) -> tuple[str, tuple[str, ...]]:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if self._formatter is None:
            template = self.llm.metadata.get("tokenizer.chat_template")
            if not template:
                raise ModelCorruptError(
                    f"Model '{self.name}' has no chat template in its GGUF.",
                    'Set prompt_format = "completion" and a template for it in models.toml.',
                )
            self._bos_text = self._piece(self.llm.token_bos())
            self._eos_text = self._piece(self.llm.token_eos())
            self._formatter = Jinja2ChatFormatter(template, self._eos_text, self._bos_text)
        payload = [{"role": m.role, "content": m.content} for m in messages]
        result = self._formatter(messages=payload)
        return result.prompt, ()

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="ignore")

    # -- decoding -----------------------------------------------------------

    def eval(self, tokens: Sequence[int], logits: str = "last") -> np.ndarray:
        if not tokens:
            raise ValueError("eval needs at least one token")
        if len(self._tokens) + len(tokens) > self.n_ctx:
            raise ValueError(f"context window of {self.n_ctx} tokens exceeded")
        rows: list[np.ndarray] = []
        batch = self._batch
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start: start + self.n_batch]
            is_final = start + len(chunk) == len(tokens)
            n_past = len(self._tokens)
            for i, tok in enumerate(chunk):
                batch.token[i] = tok
                batch.pos[i] = n_past + i
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = 0
                want = logits == "all" or (logits == "last" and is_final and i == len(chunk) - 1)
                batch.logits[i] = want
            batch.n_tokens = len(chunk)
            rc = self._lib.llama_decode(self._ctx, batch)
            if rc != 0:
                self.truncate(n_past)
                raise RuntimeError(f"llama_decode failed with code {rc}")
            self._tokens.extend(int(t) for t in chunk)
            if logits == "all":
                rows.extend(self._row(i) for i in range(len(chunk)))
            elif logits == "last" and is_final:
                rows.append(self._row(len(chunk) - 1))
        if not rows:
            return np.empty((0, self.n_vocab), dtype=np.float32)
        return np.stack(rows)

    def _row(self, i: int) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self._ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    def truncate(self, n: int) -> None:
        self._lib.llama_memory_seq_rm(self._memory, 0, n, -1)
        del self._tokens[n:]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._lib.llama_batch_free(self._batch)
        self.llm.close()


def llama_cpp_version() -> str:
    import llama_cpp

    return getattr(llama_cpp, "__version__", "unknown")


def gpu_offload_supported() -> bool:
    """Whether this llama.cpp build can put layers on a GPU (CUDA, Metal, ...), not whether
    one is free: a CPU build says no."""
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def reference_completion(
    spec: ModelSpec,
    path: Path,
    prompt_tokens: Sequence[int],
    max_tokens: int,
    *,
    prompt_lookup: int = 0,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    llm=None,
) -> tuple[list[int], float, object]:
    """llama-cpp-python's own greedy generation (optionally with its prompt-lookup
    `draft_model`), for side-by-side benchmarks. Returns (tokens, seconds, llm) so the
    caller can reuse the loaded model.
    """
    import time

    import llama_cpp
    from llama_cpp import Llama
    from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

    if llm is None:
        threads = n_threads or default_threads()
        draft = LlamaPromptLookupDecoding(num_pred_tokens=prompt_lookup) if prompt_lookup else None
        with _quiet_stderr():
            llm = Llama(model_path=str(path), n_ctx=spec.n_ctx, n_threads=threads, n_threads_batch=threads,
                        n_gpu_layers=n_gpu_layers, draft_model=draft, verbose=False)
    llm.reset()
    t0 = time.perf_counter()
    out: list[int] = []
    _, vocab = _handles(llm)
    for tok in llm.generate(list(prompt_tokens), temp=0.0, top_k=1, reset=True):
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        out.append(int(tok))
        if len(out) >= max_tokens:
            break
    return out, time.perf_counter() - t0, llm
