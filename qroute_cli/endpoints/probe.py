"""What an endpoint is: whether it answers, which models it serves, what llama-server says of
itself (/props: its model file, context size, whether it drafts). Used by `qroute models
list`, `qroute calibrate --endpoint` and before an endpoint's first calibration."""

from __future__ import annotations

from dataclasses import dataclass, field

from qroute_cli.endpoints.client import Client
from qroute_cli.errors import EndpointError

# A probe is a glance: a server that takes longer than this to say it is alive counts as down.
PROBE_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class Capabilities:
    """What a probe found."""

    endpoint: str
    ok: bool
    error: str | None = None  # why not ok, one line
    models: tuple[str, ...] = ()  # ids from /v1/models
    n_ctx: int | None = None  # llama-server's context per slot (/props)
    model_path: str | None = None  # llama-server's model file (/props)
    props: dict = field(default_factory=dict)

    def serves(self, model: str) -> bool | None:
        """Whether `model` is among the served ones (None: the server did not list any)."""
        return None if not self.models else model in self.models


def probe(client: Client, timeout_s: float = PROBE_TIMEOUT_S) -> Capabilities:
    """/health, /v1/models and (llama-server) /props; never raises for a failing server."""
    e = client.endpoint
    try:
        status, body = client.get_json("/health", timeout_s)
        if status == 404:  # a generic OpenAI server without /health: /v1/models says it is alive
            status = 200
        if status != 200:
            detail = body.get("error", body) if isinstance(body, dict) else body
            return Capabilities(e.name, False, f"Endpoint '{e.name}' ({e.url}) is not ready: /health answered "
                                               f"HTTP {status} {str(detail or '')[:120]}".strip())
        status, body = client.get_json("/v1/models", timeout_s)
        if status != 200 or not isinstance(body, dict):
            return Capabilities(e.name, False, f"Endpoint '{e.name}' ({e.url}) does not speak OpenAI's API: "
                                               f"/v1/models answered HTTP {status}.")
        models = tuple(str(m.get("id")) for m in body.get("data", []) if isinstance(m, dict) and m.get("id"))
        props: dict = {}
        if e.kind == "llama-server":
            status, body = client.get_json("/props", timeout_s)
            props = body if status == 200 and isinstance(body, dict) else {}
    except EndpointError as exc:
        return Capabilities(e.name, False, exc.message)
    settings = props.get("default_generation_settings") if isinstance(props.get("default_generation_settings"), dict) else {}
    n_ctx = settings.get("n_ctx") if isinstance(settings.get("n_ctx"), int) else None
    path = props.get("model_path") if isinstance(props.get("model_path"), str) else None
    return Capabilities(e.name, True, None, models, n_ctx, path, props)


def probe_all(registry, timeout_s: float = PROBE_TIMEOUT_S) -> dict[str, Capabilities]:
    """Every endpoint of `registry`, probed at once (a list of them takes one timeout, not one each)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(name: str) -> Capabilities:
        try:
            client = Client(registry.endpoints[name])
        except EndpointError as exc:  # e.g. its API key variable is not set
            return Capabilities(name, False, exc.message)
        try:
            return probe(client, timeout_s)
        finally:
            client.close()

    names = list(registry.endpoints)
    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(len(names), 8)) as pool:
        return dict(zip(names, pool.map(one, names)))
