"""The latency model of pairs that run on an endpoint, and their short calibration.

A remote answer's time is the network and the server's queue (overhead), then the server's
prefill of the prompt, then its decode, whatever drafting it does included:

    predicted latency = overhead + prefill(prompt tokens) + output tokens x decode per token

`RemoteProfile` is that, measured once per pair when its endpoint is first used (or with
`qroute calibrate --endpoint NAME`): a few short requests with a fresh nonce (so no prompt cache
helps), one short prompt and one long, read from the server's own timings (llama-server's
prompt_ms and predicted_ms) with the overhead as wall clock less server time. A server that
reports no timings is measured by wall clock: time to the first piece, then time per piece,
with the overhead inside the prefill. After that, every answer corrects the profile through
the online learner (online.py), which keeps per-endpoint factors apart from this machine's.

Profiles live in `endpoints.json` in the data dir, keyed by pair; one measured against another
URL or model name is measured again.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from qroute_cli import paths
from qroute_cli.errors import EndpointError
from qroute_cli.routing.latency import DEFAULT_TOKENS_PER_CHAR, TEMPLATE_TOKENS, now_iso
from qroute_cli.types import Endpoint, Generation, GenerationConfig, Message, Pair

REMOTE_PROFILE_VERSION = 1
# Tokens per calibration answer: enough decode steps to time, few enough to be quick on a busy server.
CALIBRATION_TOKENS = 24
# About 300 tokens of prompt: the second point of the prefill line.
_FILLER = " ".join(f"item {i}: a line of text that the server has to read before it answers." for i in range(24))


@dataclass(frozen=True)
class RemoteProfile:
    """Measured costs of one pair on its endpoint, in seconds."""

    pair: str
    identity: str  # endpoint URL and model name: another server is measured again
    prefill_base_s: float
    prefill_tps: float
    decode_s: float  # per output token after the first, the server's drafting included
    overhead_s: float  # network and queue: wall clock less the server's time (0: not separable)
    timed_by_server: bool
    measured_at: str = ""

    def prefill(self, n_tokens: float) -> float:
        return self.prefill_base_s + max(n_tokens, 1.0) / self.prefill_tps


def identity(endpoint: Endpoint, model: str) -> str:
    return f"{endpoint.url} {model}"


def profiles_path() -> Path:
    return paths.data_dir() / "endpoints.json"


def load_profiles(warn: Callable[[str], None] = lambda msg: None) -> dict[str, RemoteProfile]:
    """Saved remote profiles by pair; a file that cannot be read is ignored with a warning."""
    path = profiles_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != REMOTE_PROFILE_VERSION:
            raise ValueError(f"version {data.get('version')!r}, expected {REMOTE_PROFILE_VERSION}")
        out = {}
        for name, p in data["pairs"].items():
            prof = RemoteProfile(**p)
            if not (prof.prefill_tps > 0 and prof.decode_s > 0 and prof.prefill_base_s >= 0 and prof.overhead_s >= 0):
                raise ValueError(f"pair '{name}': costs must be positive")
            out[name] = prof
        return out
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        warn(f"The endpoint profiles {path} cannot be used ({exc}); endpoints will be measured again.")
        return {}


def save_profiles(profiles: dict[str, RemoteProfile]) -> Path:
    path = profiles_path()
    paths.private_dir(path.parent)
    data = {"version": REMOTE_PROFILE_VERSION, "pairs": {n: asdict(p) for n, p in sorted(profiles.items())}}
    return paths.write_private(path, json.dumps(data, indent=1))


def _new_prompt_tokens(gen: Generation, chars: int) -> float:
    """Prompt tokens the server evaluated (from its count, else estimated from characters)."""
    s = gen.stats
    if s.prompt_tokens:
        return float(max(s.prompt_tokens - s.prompt_cached, 1))
    return TEMPLATE_TOKENS + chars * DEFAULT_TOKENS_PER_CHAR


def profile_from_runs(pair: Pair, ident: str, runs: list[tuple[Generation, int]]) -> RemoteProfile:
    """A profile from calibration answers: (generation, prompt characters), short prompt first."""
    import statistics  # here: every routed prompt imports this module, and only calibration needs it

    timed = all(g.stats.server_prefill_s is not None and g.stats.server_decode_s is not None for g, _ in runs)
    points = []  # (prompt tokens, prefill seconds)
    decode_s = decode_n = 0.0
    overheads = []
    for gen, chars in runs:
        s = gen.stats
        n = _new_prompt_tokens(gen, chars)
        if timed:
            points.append((n, s.server_prefill_s))
            decode_s += s.server_decode_s
            overheads.append(max(s.latency_s - s.server_prefill_s - s.server_decode_s, 0.0))
        else:
            points.append((n, s.ttft_s))
            decode_s += max(s.latency_s - s.ttft_s, 0.0)
        decode_n += max(s.output_tokens - 1, 0)
    if decode_n < 1:
        raise EndpointError(f"Pair '{pair.name}': the endpoint's calibration answers had no tokens to time.",
                            "Check that the model answers a plain prompt (try it with curl).",
                            endpoint=pair.endpoint or "", kind="bad_response")
    points.sort()
    (n1, t1), (n2, t2) = points[0], points[-1]
    if n2 - n1 >= 8 and t2 > t1:
        tps = (n2 - n1) / (t2 - t1)
        base = max(t1 - n1 / tps, 0.0)
    else:  # the two prompts took as long: all of it counts as per-token cost
        tps, base = n2 / max(t2, 1e-6), 0.0
    return RemoteProfile(pair.name, ident, base, max(tps, 1e-3), max(decode_s / decode_n, 1e-6),
                         statistics.fmean(overheads) if overheads else 0.0, timed, now_iso())


def calibrate_pair(endpoints, pair: Pair) -> RemoteProfile:
    """Measure `pair` on its endpoint: a warm-up answer, then a short and a long prompt.
    EndpointError when the endpoint fails or does not serve the pair's model."""
    from qroute_cli.endpoints.probe import probe
    client = endpoints.client(pair.endpoint)
    endpoint = client.endpoint
    model = endpoint.model_for(pair)
    caps = probe(client)
    if not caps.ok:
        raise EndpointError(caps.error or f"Endpoint '{endpoint.name}' is not ready.",
                            "Check that the server runs; `qroute models list` shows every endpoint's state.",
                            endpoint=endpoint.name, kind="refused")
    if endpoint.kind == "openai" and caps.serves(model) is False:
        raise EndpointError(f"Endpoint '{endpoint.name}' ({endpoint.url}) does not serve model '{model}'; "
                            f"it serves: {', '.join(caps.models)}.",
                            f"Set model = \"{caps.models[0]}\" for pair '{pair.name}' (or its endpoint) in models.toml.",
                            endpoint=endpoint.name, kind="http", status=404)
    config = GenerationConfig(max_tokens=CALIBRATION_TOKENS, temperature=0.0)
    task = " Count from 1 to 60, separated by spaces."
    runs = []
    for i, filler in enumerate(("", "", _FILLER)):  # the first answer warms the server up
        text = f"[{uuid.uuid4().hex[:12]}] {filler}{task}"
        gen = endpoints.run(pair, [Message("user", text)], config if i else GenerationConfig(max_tokens=2))
        if i:
            runs.append((gen, len(text)))
    return profile_from_runs(pair, identity(endpoint, model), runs)


def calibrate_endpoints(registry, names: list[str], on_pair: Callable[[str], None] = lambda name: None) -> dict[str, RemoteProfile]:
    """Measure every pair on the endpoints `names` and save the profiles (the others' stay).
    EndpointError when an endpoint fails; UsageError for an unknown name or one without pairs."""
    from qroute_cli.endpoints import Endpoints
    from qroute_cli.errors import UsageError

    for name in names:
        registry.endpoint(name)  # unknown -> "Did you mean"
    pairs = [p for p in registry.pairs.values() if p.endpoint in names]
    if not pairs:
        raise UsageError(f"No pair runs on {', '.join(names)}.",
                         'Add one to models.toml: [pairs.NAME] with verifier = "MODEL" and endpoint = "ENDPOINT".')
    profiles = load_profiles()
    measured = {}
    with Endpoints(registry) as endpoints:
        for pair in pairs:
            on_pair(pair.name)
            measured[pair.name] = calibrate_pair(endpoints, pair)
    save_profiles({**profiles, **measured})
    return measured
