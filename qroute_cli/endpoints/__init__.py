"""Remote endpoints: pairs that a server answers over OpenAI's chat API (llama-server, vLLM).

`client.py` speaks HTTP (httpx, streaming server-sent events) and turns every failure into one
EndpointError; `report.py` reads what a server says about an answer (llama-server's timings,
OpenAI's usage, vLLM's speculative-decoding counts); `run.py` answers a pair through its
endpoint as the local runner answers through llama.cpp; `probe.py` asks a server what it is;
`health.py` remembers, in this process, which endpoints failed and until when they are left
out; `Endpoints` (below) holds one client per endpoint and that memory.

Like generation, this layer never imports routing: the router asks it to run and to probe,
and keeps the latency model itself.
"""

from __future__ import annotations

from typing import Sequence

from qroute_cli.config import Registry
from qroute_cli.endpoints.client import Client
from qroute_cli.endpoints.health import Health
from qroute_cli.errors import EndpointError
from qroute_cli.types import Generation, GenerationConfig, Message, Pair


class Endpoints:
    """One HTTP client per endpoint (made on first use, closed with this) and their health."""

    def __init__(self, registry: Registry, *, health: Health | None = None) -> None:
        self.registry = registry
        self.health = health or Health()
        self._clients: dict[str, Client] = {}

    def client(self, name: str) -> Client:
        if name not in self._clients:
            self._clients[name] = Client(self.registry.endpoint(name))
        return self._clients[name]

    def run(self, pair: Pair, messages: Sequence[Message], config: GenerationConfig, on_text=None) -> Generation:
        """Answer `messages` with `pair` on its endpoint (EndpointError when the endpoint fails)."""
        from qroute_cli.endpoints.run import run_remote

        return run_remote(self.client(pair.endpoint), pair, messages, config, on_text)

    def failed(self, exc: EndpointError) -> bool:
        """Mark the endpoint of `exc` down when it, not the request, was at fault; True if so."""
        if not exc.endpoint_fault or exc.endpoint not in self.registry.endpoints:
            return False
        self.health.mark_down(exc.endpoint, exc.message, self.registry.endpoints[exc.endpoint].down_for_s)
        return True

    def close(self) -> None:
        while self._clients:
            _, client = self._clients.popitem()
            client.close()

    def __enter__(self) -> "Endpoints":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
