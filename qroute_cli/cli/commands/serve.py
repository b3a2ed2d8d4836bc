"""`qroute serve`: the router behind an OpenAI-compatible HTTP API (qroute_cli/serve/)."""

from __future__ import annotations

from typing import Optional

import typer

from qroute_cli.cli.options import cap_threads

# Addresses only this machine can reach: serving on them needs no API key.
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs --api-key."),
    port: int = typer.Option(8000, "--port", metavar="PORT", min=1, max=65535, help="Port to listen on."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="QROUTE_API_KEY",
                                          help="Require 'Authorization: Bearer KEY' on every request."),
    strategy: Optional[str] = typer.Option(None, "--strategy", "-s", help="Default strategy: quality (default), cost, random or static:PAIR."),
    budget: Optional[str] = typer.Option(None, "--budget", "-b", help="Default latency budget per request, queue included, e.g. 5s (default from config)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", "-n", metavar="N", min=1, help="Most tokens per answer when a request gives none (default from config)."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", min=1, callback=cap_threads, help="CPU threads for llama.cpp (default: all cores)."),
    gpu_layers: int = typer.Option(0, "--gpu-layers", metavar="N", min=-1, help="Layers to offload to a GPU (-1 = all) where llama.cpp has one."),
    draft_gpu_layers: Optional[int] = typer.Option(None, "--draft-gpu-layers", metavar="N", min=-1, help="Layers of a drafting model to offload (-1 = all; default: as --gpu-layers), e.g. 0 keeps a small drafter on the CPU while the verifier runs on the GPU."),
) -> None:
    """Serve routed answers over an OpenAI-compatible API (chat, completions, models, metrics).

    Model names: qroute/auto (default strategy and budget), qroute/auto@2s (a budget), qroute/cost, qroute/pair/PAIR (no routing).

    One answer runs at a time; the others queue, and their wait counts against their budget.

    Examples:

      qroute serve

      qroute serve --host 0.0.0.0 --port 8000 --api-key "$KEY"

      curl localhost:8000/v1/chat/completions -H 'Content-Type: application/json' \\
        -d '{"model": "qroute/auto@2s", "messages": [{"role": "user", "content": "Hi"}]}'
    """
    from qroute_cli.cli.options import registry, state
    from qroute_cli.errors import UsageError
    from qroute_cli.generation.pool import ModelPool
    from qroute_cli.render import calibration_progress, err_console
    from qroute_cli.routing.router import Router, parse_budget

    if host not in LOOPBACK and not api_key:
        raise UsageError(f"Serving on {host} lets other machines in: an API key is required.",
                         "Pass --api-key KEY (or set QROUTE_API_KEY), or keep the default --host 127.0.0.1.")
    try:
        import uvicorn

        from qroute_cli.serve.app import Settings, create_app
    except ImportError as exc:
        raise UsageError(f"qroute serve needs a package that is not installed ({exc.name}).",
                         "Install qroute's dependencies again: pip install starlette uvicorn prometheus-client")
    reg = registry()
    budget_s = parse_budget(budget if budget is not None else reg.defaults.budget)
    err = err_console()
    with ModelPool(reg, n_threads=threads, n_gpu_layers=gpu_layers, draft_gpu_layers=draft_gpu_layers) as pool:
        router = Router(reg, strategy=strategy or reg.defaults.strategy, budget_s=budget_s, console=err,
                        progress=calibration_progress, pool=pool)
        settings = Settings(api_key=api_key, max_tokens=max_tokens or reg.defaults.max_tokens)
        app = create_app(router, pool, settings=settings)
        if not state.quiet:
            err.print(f"qroute serve: http://{host}:{port}/v1  (models: GET /v1/models; Ctrl-C stops)",
                      highlight=False)
        uvicorn.run(app, host=host, port=port, log_level="warning" if state.quiet else "info",
                    timeout_graceful_shutdown=5)
