"""Answer a pair through its endpoint: the remote counterpart of generation/runner.py.

The request is OpenAI's streamed chat completion with the pair's model name; text reaches
`on_text` piece by piece as it arrives. The stats are the user's view (wall-clock time to the
first piece and to the end) plus the server's own timings where it reports them: the router
learns the server's prompt and decode speed from those, and the network and queue overhead
from the difference.

A hard budget (config.deadline_s) ends the answer when the next piece, arriving after the
slowest recent gap, would come too late; the connection is closed, which stops the server.
`on_text` raising KeyboardInterrupt (Ctrl-C, a client of `qroute serve` that left) ends it the
same way, with finish_reason "interrupted".
"""

from __future__ import annotations

import time
from typing import Any, Callable, Sequence

from qroute_cli.endpoints.client import Client
from qroute_cli.endpoints.report import ServerReport, read_event
from qroute_cli.errors import EndpointError
from qroute_cli.tuning import DEADLINE
from qroute_cli.types import Endpoint, Generation, GenerationConfig, Message, Pair, SpecStats

_FINISH = {"stop": "stop", "length": "length", "eos": "stop", "stop_sequence": "stop", "tool_calls": "stop"}


def chat_body(endpoint: Endpoint, pair: Pair, messages: Sequence[Message], config: GenerationConfig) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": endpoint.model_for(pair),
        "messages": [{"role": m.role, "content": m.content} for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": config.max_tokens,
        "temperature": config.temperature,
    }
    if config.seed is not None:
        body["seed"] = config.seed
    if config.stop:
        body["stop"] = list(config.stop)[:4]  # OpenAI's API takes at most 4
    return body


def run_remote(
    client: Client,
    pair: Pair,
    messages: Sequence[Message],
    config: GenerationConfig,
    on_text: Callable[[str], None] | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> Generation:
    """Answer `messages` with `pair` on `client`'s endpoint; EndpointError when it fails
    (its `shown` says how many pieces already reached `on_text`)."""
    endpoint = client.endpoint
    deadline = config.deadline_s
    # A deadline shorter than the read timeout bounds the wait for the first piece too.
    read_timeout = endpoint.read_timeout_s if deadline is None else max(min(endpoint.read_timeout_s, deadline), 0.01)
    pieces: list[str] = []
    report = ServerReport()
    finish: str | None = None
    t0 = clock()
    ttft: float | None = None
    last, gap = t0, 0.0
    try:
        with client.stream_chat(chat_body(endpoint, pair, messages, config), read_timeout) as events:
            for event in events:
                report = read_event(event, report)
                choices = event.get("choices")
                choice = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
                delta = choice.get("delta") if isinstance(choice.get("delta"), dict) else {}
                text = delta.get("content") or choice.get("text")  # chat, or a completion-style server
                if isinstance(text, str) and text:
                    now = clock()
                    ttft = now - t0 if ttft is None else ttft
                    gap = max(now - last, DEADLINE.step_decay * gap)
                    last = now
                    pieces.append(text)
                    if on_text is not None:
                        on_text(text)
                if choice.get("finish_reason"):
                    finish = _FINISH.get(str(choice["finish_reason"]), "stop")
                if finish is None and deadline is not None and clock() - t0 + gap > deadline:
                    finish = "deadline"
                    break
    except KeyboardInterrupt:
        finish = "interrupted"
    except EndpointError as exc:
        if deadline is not None and exc.kind == "timeout" and clock() - t0 >= deadline * 0.99:
            finish = "deadline"  # silent until the deadline: the budget ended it, not a fault
        else:
            exc.shown = len(pieces)
            raise
    if finish is None:
        raise EndpointError(
            f"Endpoint '{endpoint.name}' ({endpoint.url}) ended its answer without a finish_reason.",
            "The server may have stopped mid-answer; check its log.", endpoint=endpoint.name,
            kind="dropped", shown=len(pieces))
    latency = clock() - t0
    # A stream cut short never got the server's count: each piece is about one token.
    whole = finish not in ("deadline", "interrupted") and report.completion_tokens is not None
    output = report.completion_tokens if whole else len(pieces)
    stats = SpecStats(
        prompt_tokens=report.prompt_tokens or 0,
        output_tokens=output,
        ttft_s=ttft if ttft is not None else latency,
        latency_s=latency,
        drafted=report.drafted or 0,
        accepted=report.accepted or 0,
        checked=report.drafted or 0,  # a server counts drafted tokens, not the ones it judged
        prompt_cached=report.cached_tokens or 0,
        server_prefill_s=report.prefill_s,
        server_decode_s=report.decode_s,
    )
    return Generation(text="".join(pieces), tokens=(), stats=stats, finish_reason=finish, pair=pair.name)
