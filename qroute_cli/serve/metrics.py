"""Prometheus metrics of `qroute serve`, in a registry of their own (one per app, so that two
apps in one process, as in tests, count apart).

Labels: `endpoint` (chat or completions) and `pair` (the pair that answered; "none" for a
request that got an error before a pair ran). `outcome` is ok, deadline (the hard budget cut
the answer), interrupted (the client went away) or error. `upstream` is a remote endpoint of
models.toml (the machine a pair ran on); its failures are counted by `reason`: failover (another
pair answered instead) or the error's kind when the request failed with it (refused, timeout,
http, dropped, bad_response).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a fast answer on a small model to a long one on a large model on CPU.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)


class Metrics:
    """Counters and histograms of every request the server answered or refused."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("qroute_requests", "Requests answered or refused.",
                                ["endpoint", "pair", "outcome"], registry=r)
        self.budget_misses = Counter("qroute_budget_misses", "Answers whose wall time (queue included) "
                                     "passed their latency budget.", ["endpoint", "pair"], registry=r)
        self.drafted = Counter("qroute_drafted_tokens", "Tokens the drafter proposed.", ["endpoint", "pair"], registry=r)
        self.accepted = Counter("qroute_accepted_tokens", "Drafted tokens the verifier kept.",
                                ["endpoint", "pair"], registry=r)
        self.completion_tokens = Counter("qroute_completion_tokens", "Tokens generated.", ["endpoint", "pair"],
                                         registry=r)
        self.latency = Histogram("qroute_request_latency_seconds", "Wall time of an answer, queue included.",
                                 ["endpoint", "pair"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("qroute_queue_wait_seconds", "Time a request waited for the model.",
                                    ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("qroute_queue_depth", "Requests waiting for or running on the model.", registry=r)
        self.upstream_answers = Counter("qroute_upstream_answers", "Answers a remote endpoint gave.",
                                        ["upstream", "pair"], registry=r)
        self.upstream_failures = Counter("qroute_upstream_failures", "Remote endpoint failures, by what followed "
                                         "(failover) or what failed the request.", ["upstream", "reason"], registry=r)

    def answered(self, endpoint: str, pair: str, outcome: str, *, wall_s: float, queue_s: float,
                 drafted: int, accepted: int, tokens: int, missed_budget: bool) -> None:
        self.requests.labels(endpoint, pair, outcome).inc()
        self.latency.labels(endpoint, pair).observe(wall_s)
        self.queue_wait.labels(endpoint).observe(queue_s)
        self.drafted.labels(endpoint, pair).inc(drafted)
        self.accepted.labels(endpoint, pair).inc(accepted)
        self.completion_tokens.labels(endpoint, pair).inc(tokens)
        if missed_budget:
            self.budget_misses.labels(endpoint, pair).inc()

    def upstream_answered(self, upstream: str, pair: str) -> None:
        self.upstream_answers.labels(upstream, pair).inc()

    def upstream_failed(self, upstream: str, reason: str) -> None:
        self.upstream_failures.labels(upstream, reason).inc()

    def refused(self, endpoint: str) -> None:
        self.requests.labels(endpoint, "none", "error").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
