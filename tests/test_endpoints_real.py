"""Remote endpoints against real servers on 127.0.0.1 running smollm2-135m: llama.cpp's own
llama-server (tests/servers.py; with and without a draft model) and llama-cpp-python's
`python -m llama_cpp.server` as a generic OpenAI endpoint. They assert what holds on any CPU
and under any load: no timings, only counts, states and that the pipeline gets through."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import require_model, require_module
from servers import smollm_self_draft_server, smollm_server  # noqa: F401 (fixtures)
from qroute_cli.answer import answer
from qroute_cli.config import load_registry
from qroute_cli.endpoints import Endpoints
from qroute_cli.endpoints.probe import probe
from qroute_cli.generation.pool import ModelPool
from qroute_cli.routing import remote
from qroute_cli.routing.router import Router
from qroute_cli.routing.scoring import PriorScorer
from qroute_cli.types import GenerationConfig, Message

pytestmark = pytest.mark.real

PROMPT = [Message("user", "List the numbers from 1 to 30, separated by commas.")]
GENERIC_ALIAS = "smollm-generic"


@contextlib.contextmanager
def generic_openai_server(model: str = "smollm2-135m"):
    """`python -m llama_cpp.server` on a free port (one thread, small context): (URL, process)."""
    require_module("sse_starlette")  # llama_cpp.server's own dependencies (the test extra has them)
    require_module("starlette_context")
    from qroute_cli.generation.llama_tools import free_port, port_open

    path = require_model(model)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
                             "--port", str(port), "--n_threads", "1", "--n_ctx", "1024",
                             "--model_alias", GENERIC_ALIAS, "--verbose", "False"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 120
        while not port_open("127.0.0.1", port):
            if proc.poll() is not None or time.monotonic() > end:
                pytest.fail(f"llama_cpp.server did not start: {proc.stderr.read()[-2000:] if proc.poll() is not None else ''}")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def registry_for(tmp_path: Path, endpoints: dict[str, tuple[str, str, str]]):
    """Remote-only registry: endpoint name -> (url, kind, model name the server expects); one
    pair per endpoint, the first with the higher quality prior."""
    text = "include_builtin = false\n"
    for i, (name, (url, kind, model)) in enumerate(endpoints.items()):
        text += textwrap.dedent(f"""
            [models.smollm-{name}]
            remote = true
            quality_prior = {0.6 - i * 0.2}

            [endpoints.{name}]
            url = "{url}"
            kind = "{kind}"
            model = "{model}"
            connect_timeout = 2
            read_timeout = 60

            [pairs."smollm@{name}"]
            verifier = "smollm-{name}"
            endpoint = "{name}"
        """)
    path = tmp_path / "models.toml"
    path.write_text(text)
    return load_registry(path, include_user=False)


def test_llama_server_reports_its_timings(tmp_path, smollm_server):
    reg = registry_for(tmp_path, {"ls": (smollm_server.url, "llama-server", "smollm2-135m")})
    with Endpoints(reg) as eps:
        caps = probe(eps.client("ls"))
        assert caps.ok and caps.n_ctx and caps.model_path and caps.model_path.endswith("smollm2-135m.gguf")
        gen = eps.run(reg.pairs["smollm@ls"], PROMPT, GenerationConfig(max_tokens=24))
    s = gen.stats
    assert gen.text and gen.finish_reason in ("stop", "length") and s.output_tokens <= 24
    assert s.server_prefill_s > 0 and s.server_decode_s > 0 and s.prompt_tokens > 10
    assert s.drafted == 0  # no draft model
    assert s.server_prefill_s + s.server_decode_s <= s.latency_s  # the server's time is inside the wall clock


def test_a_model_drafting_for_itself_has_nearly_everything_accepted(tmp_path, smollm_self_draft_server):
    reg = registry_for(tmp_path, {"sd": (smollm_self_draft_server.url, "llama-server", "smollm2-135m")})
    with Endpoints(reg) as eps:
        gen = eps.run(reg.pairs["smollm@sd"], PROMPT, GenerationConfig(max_tokens=48, temperature=0.0))
    s = gen.stats
    assert s.drafted >= 8, s  # llama-server drafted, and said so (draft_n)
    assert s.accepted >= 0.9 * s.drafted, s  # the same model at temperature 0 agrees with itself


def test_routed_calibrated_and_learned_through_llama_server(tmp_path, smollm_server):
    reg = registry_for(tmp_path, {"ls": (smollm_server.url, "llama-server", "smollm2-135m")})
    router = Router(reg, budget_s=60.0, scorer=PriorScorer(reg))
    with ModelPool(reg) as pool:
        first = answer(router, pool, PROMPT, GenerationConfig(max_tokens=16))  # calibrates on first use
        second = answer(router, pool, PROMPT, GenerationConfig(max_tokens=16))
    runs = router.store.recent()
    router.close()
    prof = remote.load_profiles()["smollm@ls"]
    assert prof.timed_by_server and prof.decode_s > 0 and prof.prefill_tps > 0 and prof.overhead_s >= 0
    assert first.pair.name == second.pair.name == "smollm@ls"
    assert [r.endpoint for r in runs] == ["ls", "ls"] and all(r.server_decode_s for r in runs)
    assert second.decision.predicted is not None and second.decision.predicted.latency_s > 0


def test_llama_cpp_python_server_as_a_generic_openai_endpoint(tmp_path):
    with generic_openai_server() as (url, _):
        reg = registry_for(tmp_path, {"py": (url, "openai", GENERIC_ALIAS)})
        with Endpoints(reg) as eps:
            caps = probe(eps.client("py"))
            assert caps.ok and caps.serves(GENERIC_ALIAS)
            pieces = []
            gen = eps.run(reg.pairs["smollm@py"], PROMPT, GenerationConfig(max_tokens=12), pieces.append)
            prof = remote.calibrate_pair(eps, reg.pairs["smollm@py"])
    assert gen.text == "".join(pieces) and gen.text and 0 < gen.stats.output_tokens <= 12
    assert gen.finish_reason in ("stop", "length") and gen.stats.server_decode_s is None  # no timings here
    assert not prof.timed_by_server and prof.decode_s > 0


def test_a_server_killed_mid_run_fails_over_to_the_other(tmp_path):
    # Two generic servers, so that this runs wherever llama-cpp-python does (llama-server may be unbuilt).
    with generic_openai_server() as (url, _), generic_openai_server() as (doomed_url, doomed):
        reg = registry_for(tmp_path, {"doomed": (doomed_url, "openai", GENERIC_ALIAS),
                                      "py": (url, "openai", GENERIC_ALIAS)})
        # Profiles given: no calibration requests, the routing is the quality priors'.
        profiles = {p: remote.RemoteProfile(p, "-", 0.0, 500.0, 0.02, 0.0, False) for p in reg.pairs}
        router = Router(reg, budget_s=60.0, scorer=PriorScorer(reg), remote_profiles=profiles)
        with ModelPool(reg) as pool:
            assert answer(router, pool, PROMPT, GenerationConfig(max_tokens=8)).pair.name == "smollm@doomed"
            doomed.kill()  # SIGKILL: the machine went away
            doomed.wait()
            result = answer(router, pool, PROMPT, GenerationConfig(max_tokens=8))
        router.close()
    assert result.pair.name == "smollm@py" and result.generation.text
    assert [f.pair for f in result.failovers] == ["smollm@doomed"]
    assert "refused the connection" in result.failovers[0].error
