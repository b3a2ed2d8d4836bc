"""What a server says about one answer, read from its streamed events.

llama-server puts `timings` on its last event: prompt_n (prompt tokens it evaluated), cache_n
(reused from its cache), prompt_ms, predicted_n, predicted_ms (the decode after the first token,
which comes from the prompt's logits) and, when it drafted, draft_n and draft_n_accepted.
OpenAI's `usage` (with stream_options.include_usage) gives token counts; its
completion_tokens_details.accepted_prediction_tokens / rejected_prediction_tokens are the
drafted-and-kept and drafted-and-dropped counts where a server fills them. vLLM started with
--per-request-spec-decode-metrics reports metrics.speculative_decoding (num_draft_tokens,
num_accepted_draft_tokens). A field that is missing, negative or not a number is ignored: a
server's statistics never fail an answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class ServerReport:
    """The server's own account of an answer; None where it said nothing."""

    prompt_tokens: int | None = None  # the whole prompt, cached part included
    cached_tokens: int | None = None
    completion_tokens: int | None = None
    prefill_s: float | None = None  # the server's prompt time
    decode_s: float | None = None  # the server's time after the first token
    drafted: int | None = None
    accepted: int | None = None

    @property
    def timed(self) -> bool:
        return self.prefill_s is not None and self.decode_s is not None


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return None
    return int(value)


def _ms(value: Any) -> float | None:
    n = None if isinstance(value, bool) or not isinstance(value, (int, float)) else float(value)
    return None if n is None or not math.isfinite(n) or n < 0 else n / 1000.0


def _table(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def read_event(event: dict, report: ServerReport) -> ServerReport:
    """`report` with what one streamed event adds (later events win)."""
    found: dict[str, Any] = {}
    timings = _table(event.get("timings"))
    if timings:
        prompt_n, cache_n = _count(timings.get("prompt_n")), _count(timings.get("cache_n"))
        found.update(
            prefill_s=_ms(timings.get("prompt_ms")), decode_s=_ms(timings.get("predicted_ms")),
            completion_tokens=_count(timings.get("predicted_n")),
            drafted=_count(timings.get("draft_n")), accepted=_count(timings.get("draft_n_accepted")),
            cached_tokens=cache_n,
            prompt_tokens=None if prompt_n is None else prompt_n + (cache_n or 0),
        )
    usage = _table(event.get("usage"))
    if usage:
        found.update(prompt_tokens=_count(usage.get("prompt_tokens")),
                     completion_tokens=_count(usage.get("completion_tokens")))
        cached = _count(_table(usage.get("prompt_tokens_details")).get("cached_tokens"))
        if cached is not None:
            found["cached_tokens"] = cached
        details = _table(usage.get("completion_tokens_details"))
        kept, dropped = _count(details.get("accepted_prediction_tokens")), _count(details.get("rejected_prediction_tokens"))
        if kept is not None and dropped is not None and kept + dropped > 0:
            found.update(drafted=kept + dropped, accepted=kept)
    spec = _table(_table(event.get("metrics")).get("speculative_decoding"))
    if spec:
        found.update(drafted=_count(spec.get("num_draft_tokens")), accepted=_count(spec.get("num_accepted_draft_tokens")))
    found = {k: v for k, v in found.items() if v is not None}
    if found.get("accepted") is not None and found.get("drafted") is not None and found["accepted"] > found["drafted"]:
        found.pop("accepted"), found.pop("drafted")  # not a count we can believe
    return replace(report, **found) if found else report
