"""Loaded models, reused between prompts of one process and closed cleanly.

A model path of the form `fake://seed=1,noise=0.5` loads the deterministic fake backend:
tests and demos drive the real pipeline with it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable

from qroute_cli.generation.backends.base import Backend
from qroute_cli.config import Registry
from qroute_cli.generation.engine import SpeedMemory
from qroute_cli.types import ModelSpec, draft_copy

Loader = Callable[[ModelSpec], Backend]


def _fake_loader(spec: ModelSpec) -> Backend:
    from qroute_cli.generation.backends.fake import FakeBackend

    options = {}
    body = spec.path[len("fake://"):] if spec.path else ""
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        options[key.strip()] = float(value) if key.strip() in ("noise", "eos_bias", "sharpness", "step_ms", "token_ms") else int(value)
    return FakeBackend(name=spec.name, n_ctx=spec.n_ctx, **options)


def _llama_loader(spec: ModelSpec, **kwargs) -> Backend:
    from qroute_cli.generation.backends.llama import LlamaBackend
    from qroute_cli.models import cache

    return LlamaBackend.load(spec, cache.require(spec), **kwargs)


class ModelPool:
    """Keeps up to `max_loaded` models open; the least recently used is closed first."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_loaded: int = 3,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        draft_gpu_layers: int | None = None,
        loader: Loader | None = None,
        cpu_load=None,
    ) -> None:
        """`cpu_load` reports how busy other processes keep the cores (`others()`, in cores;
        default: threads.CpuLoad, reading /proc/stat once it is first needed).
        `draft_gpu_layers`: the layers of a model that drafts (None: as `n_gpu_layers`)."""
        self.registry = registry
        self.max_loaded = max_loaded
        self._loader = loader
        self.n_gpu_layers = n_gpu_layers  # layers llama.cpp offloads to a GPU (-1: all)
        self.draft_gpu_layers = n_gpu_layers if draft_gpu_layers is None else draft_gpu_layers
        # Threads follow the machine's load unless the user fixed them. With layers on a GPU
        # the layers left on the CPU (and the sampling) still spin one thread per core.
        self.adaptive_threads = n_threads is None
        self.n_threads = n_threads  # fixed by --threads; None: chosen before each answer
        self._cpu_load = cpu_load
        self._next_threads: int | None = None  # chosen by next_threads(), applied by fit_threads()
        self.last_threads: int | None = None
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self.speed: dict[str, SpeedMemory] = {}  # per pair: measured plain vs. speculative speed
        self.load_seconds: dict[str, float] = {}

    def slot(self, name: str, draft: bool = False) -> str:
        """The key `name` is kept under: the model itself, or, as a drafter placed apart from
        the verifiers (--draft-gpu-layers), a copy of its own (draft_copy(NAME))."""
        return draft_copy(name) if draft and self.draft_gpu_layers != self.n_gpu_layers else name

    def get(self, name: str, draft: bool = False) -> Backend:
        """Model `name`, loaded on first use; `draft`: as a drafter, with draft_gpu_layers."""
        key = self.slot(name, draft)
        if key in self._loaded:
            self._loaded.move_to_end(key)
            return self._loaded[key]
        import time

        spec = self.registry.model(name)
        t0 = time.perf_counter()
        if self._loader is not None:
            backend = self._loader(spec)
        elif spec.is_fake:
            backend = _fake_loader(spec)
        else:
            layers = self.draft_gpu_layers if key != name else self.n_gpu_layers
            backend = _llama_loader(spec, n_threads=self.n_threads, n_gpu_layers=layers)
        self.load_seconds[key] = time.perf_counter() - t0
        self._loaded[key] = backend
        while len(self._loaded) > self.max_loaded:
            _, old = self._loaded.popitem(last=False)
            old.close()
        return backend

    def fit_threads(self, backends) -> int | None:
        """Before an answer: give the backends the cores other processes leave free."""
        if not self.adaptive_threads:
            return None
        planned, self._next_threads = self._next_threads, None
        ready = [b for b in backends if b is not None and b.threads is not None]
        if not ready:
            return None
        n = planned or self._threads_now()
        for b in ready:
            b.set_threads(n)
        self.last_threads = n
        return n

    def next_threads(self) -> int | None:
        """The llama.cpp thread count the next answer will run with, so that its speed can be
        predicted: --threads when given, else what other processes leave free now (the next
        fit_threads() applies this same count). None when the models have no threads (fakes)."""
        if all(spec.is_fake for spec in self.registry.models.values()):
            return None
        if not self.adaptive_threads:
            return self.n_threads
        self._next_threads = self._threads_now()
        return self._next_threads

    def _threads_now(self) -> int:
        from qroute_cli.generation.threads import CpuLoad, threads_for

        if self._cpu_load is None:
            self._cpu_load = CpuLoad()
        return threads_for(os.cpu_count() or 1, self._cpu_load.others())

    def loaded(self) -> list[str]:
        return list(self._loaded)

    def speed_memory(self, pair: str) -> SpeedMemory:
        return self.speed.setdefault(pair, SpeedMemory())

    def close(self) -> None:
        while self._loaded:
            _, backend = self._loaded.popitem()
            backend.close()

    def __enter__(self) -> "ModelPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
