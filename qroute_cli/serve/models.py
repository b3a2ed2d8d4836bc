"""What `qroute serve` reads and writes: OpenAI request bodies, the `qroute` extension, model
names, and the response, chunk and error bodies.

Request bodies are pydantic models. Fields qroute does not use (top_p, presence_penalty, user,
...) are accepted and ignored, as OpenAI-compatible servers do, so that clients that always send
them work; a field qroute does use must have the right type, or the request gets a 400.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from qroute_cli.answer import Answer
from qroute_cli.errors import UsageError
from qroute_cli.types import Message

# The prefix of every model name the server lists; `qroute/pair/NAME` pins a pair.
PREFIX = "qroute/"
PINNED = PREFIX + "pair/"


class QrouteOptions(BaseModel):
    """The optional `qroute` object of a request body: how to route this one request."""

    model_config = ConfigDict(extra="forbid")  # a misspelt option must not be ignored silently

    budget: Optional[Union[str, float]] = None  # "2s", "800ms" or seconds
    strategy: Optional[str] = None  # quality, cost, random or static:PAIR
    pair: Optional[str] = None  # pin this pair: no routing
    explain: bool = False  # add every candidate the router weighed to the response
    hard_budget: bool = False  # stop generating when the budget runs out (finish_reason "length")


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # name, tool_calls, ...

    role: Literal["system", "developer", "user", "assistant"]
    content: Union[str, list[TextPart], None] = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: Optional[int] = Field(None, ge=1)
    temperature: Optional[float] = Field(None, ge=0.0, le=5.0)
    seed: Optional[int] = Field(None, ge=0)
    stop: Union[str, list[str], None] = None
    stream: bool = False
    stream_options: Optional[dict[str, Any]] = None
    n: int = Field(1, ge=1, le=1)  # one answer per request: a pair answers once
    qroute: Optional[QrouteOptions] = None

    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatRequest(_Request):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1)

    def to_messages(self) -> list[Message]:
        # "developer" is OpenAI's newer name for the system role.
        return [Message("system" if m.role == "developer" else m.role, m.text()) for m in self.messages]

    def token_cap(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(_Request):
    prompt: Union[str, list[str]]

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("give one prompt (a string, or a list of one string)")
            return value[0]
        return value

    def to_messages(self) -> list[Message]:
        return [Message("user", self.prompt)]

    def token_cap(self) -> int | None:
        return self.max_tokens


# -- model names --------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """What a model name asks for: a strategy (None: the server's), a budget, or a pinned pair."""

    strategy: str | None = None
    budget: str | None = None
    pair: str | None = None


def parse_model(name: str) -> Route:
    """'qroute/auto', 'qroute/auto@2s', 'qroute/cost@800ms', 'qroute/pair/NAME' -> Route.
    Anything else: UsageError (the server answers 404, model_not_found)."""
    if name.startswith(PINNED) and len(name) > len(PINNED):
        return Route(pair=name[len(PINNED):])
    if name.startswith(PREFIX):
        base, _, budget = name[len(PREFIX):].partition("@")
        if base in ("auto", "quality", "cost", "random"):
            return Route(strategy=None if base == "auto" else base, budget=budget or None)
    raise UsageError(f"Unknown model '{name}'.",
                     "Use qroute/auto, qroute/auto@2s, qroute/cost or qroute/pair/PAIR (GET /v1/models lists them).")


def model_list(pairs: list[str], created: int) -> dict[str, Any]:
    """The GET /v1/models body: the routed names, with budget examples, then every pinned pair."""
    names = ["qroute/auto", "qroute/auto@1s", "qroute/auto@2s", "qroute/auto@5s", "qroute/cost"]
    names += [PINNED + p for p in pairs]
    return {"object": "list",
            "data": [{"id": n, "object": "model", "created": created, "owned_by": "qroute"} for n in names]}


# -- errors -------------------------------------------------------------------------


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape, which its clients turn into a typed exception."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validation_error(exc: ValidationError) -> dict[str, Any]:
    """The first problem of a request body, named by its field path (e.g. messages.0.role)."""
    first = exc.errors()[0]
    param = ".".join(str(p) for p in first.get("loc", ())) or None
    message = first.get("msg", "invalid value")
    return error_body(f"{param}: {message}" if param else message, param=param, code="invalid_value")


# -- responses ----------------------------------------------------------------------


FINISH = {"stop": "stop", "length": "length", "deadline": "length", "interrupted": "stop"}


def decision_json(result: Answer, queue_s: float, wall_s: float, budget_s: float | None, explain: bool) -> dict[str, Any]:
    """The `qroute` object of a response: which pair answered, why, predicted vs measured."""
    d, gen, pair = result.decision, result.generation, result.pair
    s = gen.stats
    out = {
        "pair": pair.name,
        "verifier": pair.verifier,
        "drafter": pair.drafter,
        "strategy": d.strategy,
        "budget_s": budget_s,  # the request's, queue included
        "routed_budget_s": None if d.budget_s is None else round(d.budget_s, 4),  # what was left of it when the router decided
        "reason": d.reason,
        "predicted_latency_s": None if d.predicted_latency_s is None else round(d.predicted_latency_s, 4),
        "latency_s": round(s.latency_s, 4),
        "queue_s": round(queue_s, 4),
        "wall_s": round(wall_s, 4),
        "ttft_s": round(s.ttft_s, 4),
        "drafted": s.drafted,
        "accepted": s.accepted,
        "acceptance": None if s.acceptance is None else round(s.acceptance, 4),
        "max_tokens": d.max_tokens,
        "finish_reason": gen.finish_reason,
        "threads": result.threads,
        "endpoint": pair.endpoint,  # the remote endpoint that answered (None: this machine)
        "failovers": [f.to_json() for f in result.failovers],  # pairs whose endpoint failed first
    }
    if explain:
        out["candidates"] = d.to_json()["candidates"]
    return out


def usage(result: Answer) -> dict[str, int]:
    s = result.generation.stats
    return {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.output_tokens,
            "total_tokens": s.prompt_tokens + s.output_tokens}


def new_id(kind: str) -> str:
    return f"{kind}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def chat_response(rid: str, result: Answer, extra: dict[str, Any]) -> dict[str, Any]:
    gen = result.generation
    return {
        "id": rid, "object": "chat.completion", "created": now(), "model": result.pair.name,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": gen.text},
                     "finish_reason": FINISH.get(gen.finish_reason, "stop"), "logprobs": None}],
        "usage": usage(result), "qroute": extra,
    }


def completion_response(rid: str, result: Answer, extra: dict[str, Any]) -> dict[str, Any]:
    gen = result.generation
    return {
        "id": rid, "object": "text_completion", "created": now(), "model": result.pair.name,
        "choices": [{"index": 0, "text": gen.text, "finish_reason": FINISH.get(gen.finish_reason, "stop"),
                     "logprobs": None}],
        "usage": usage(result), "qroute": extra,
    }


def chat_chunk(rid: str, model: str, delta: dict[str, Any], finish: str | None = None, **extra) -> dict[str, Any]:
    return {"id": rid, "object": "chat.completion.chunk", "created": now(), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}


def completion_chunk(rid: str, model: str, text: str, finish: str | None = None, **extra) -> dict[str, Any]:
    return {"id": rid, "object": "text_completion", "created": now(), "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": finish, "logprobs": None}], **extra}
