"""Loaded models, reused between prompts of one process and closed cleanly.

A model path of the form `fake://seed=1,noise=0.5` loads the deterministic fake backend:
tests and demos drive the real pipeline with it.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Callable

from qroute_cli.backends.base import Backend
from qroute_cli.config import Registry
from qroute_cli.engine import SpeedMemory
from qroute_cli.types import ModelSpec

Loader = Callable[[ModelSpec], Backend]


def _fake_loader(spec: ModelSpec) -> Backend:
    from qroute_cli.backends.fake import FakeBackend

    options = {}
    body = spec.path[len("fake://"):] if spec.path else ""
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        options[key.strip()] = float(value) if key.strip() in ("noise", "eos_bias", "sharpness") else int(value)
    return FakeBackend(name=spec.name, n_ctx=spec.n_ctx, **options)


def _llama_loader(spec: ModelSpec, **kwargs) -> Backend:
    from qroute_cli.backends.llama import LlamaBackend
    from qroute_cli.models import store

    return LlamaBackend.load(spec, store.require(spec), **kwargs)


def is_fake(spec: ModelSpec) -> bool:
    return bool(spec.path and spec.path.startswith("fake://"))


class ModelPool:
    """Keeps up to `max_loaded` models open; the least recently used is closed first."""

    def __init__(
        self,
        registry: Registry,
        *,
        max_loaded: int = 3,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        loader: Loader | None = None,
    ) -> None:
        self.registry = registry
        self.max_loaded = max_loaded
        self._loader = loader
        self._llama_kwargs = {"n_threads": n_threads, "n_gpu_layers": n_gpu_layers}
        # Threads follow the machine's load unless the user fixed them (or layers run on a GPU).
        self.adaptive_threads = n_threads is None and n_gpu_layers == 0
        self._cpu_load = None
        self.last_threads: int | None = None
        self._loaded: OrderedDict[str, Backend] = OrderedDict()
        self.speed: dict[str, SpeedMemory] = {}  # per pair: measured plain vs. speculative speed
        self.load_seconds: dict[str, float] = {}

    def get(self, name: str) -> Backend:
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return self._loaded[name]
        import time

        spec = self.registry.model(name)
        t0 = time.perf_counter()
        if self._loader is not None:
            backend = self._loader(spec)
        elif is_fake(spec):
            backend = _fake_loader(spec)
        else:
            backend = _llama_loader(spec, **self._llama_kwargs)
        self.load_seconds[name] = time.perf_counter() - t0
        self._loaded[name] = backend
        while len(self._loaded) > self.max_loaded:
            _, old = self._loaded.popitem(last=False)
            old.close()
        return backend

    def fit_threads(self, backends) -> int | None:
        """Before an answer: give the backends the cores other processes leave free."""
        if not self.adaptive_threads:
            return None
        ready = [b for b in backends if b is not None and hasattr(b, "set_threads")]
        if not ready:
            return None
        from qroute_cli.cpuload import CpuLoad, threads_for

        if self._cpu_load is None:
            self._cpu_load = CpuLoad()
        n = threads_for(os.cpu_count() or 1, self._cpu_load.others())
        for b in ready:
            b.set_threads(n)
        self.last_threads = n
        return n

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
