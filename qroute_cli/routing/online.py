"""Online estimates learned from the run log: what the profile and the prior get wrong.

Why these updates (and not a bandit):
- Latency errors are multiplicative (a busier machine, fewer threads, a longer context slow
  every step by a factor) and drift over time. So the learner tracks log(observed/predicted)
  with a Kalman filter on a random walk - the Bayesian update for a drifting Gaussian - over
  a shared machine factor plus one factor per pair (decode) or per verifier (prefill). The
  shared factor moves every pair's estimate after a few runs of any of them, which is what
  makes a wrong profile recover quickly; the per-pair factors catch what is pair-specific.
- Acceptance is a rate of Bernoulli trials (judged draft tokens accepted or not: the tokens
  after a rejection are never judged): a Beta posterior
  per (pair, task type) with forgetting, shrunk towards the pair's pooled rate.
- Output length: a shrunk running mean per (verifier, task type) of finished answers; when
  a trained predictor gives the length, a log-scale correction per (verifier, task type)
  of its bias instead (it was trained on questions, maths and stories, and guesses far too
  short for code: a few runs of a task teach the factor).
- The budget threshold: the router treats a pair as fitting when predicted x margin <= budget;
  the margin is the empirical quantile of recent observed/predicted ratios that gives the
  target hit rate. It is the quality/latency trade-off threshold learned from use.
- Pairs on an endpoint (remote.py) learn the same way against their own profile, in filters of
  their own per endpoint: the shared factor is that server's (its load, its hardware), never
  this machine's. Prefill and decode are judged on the server's own timings where it reports
  them, and the network and queue overhead is a forgetting mean of wall clock less server time.
A bandit would need the quality of unchosen pairs, which a local CLI never observes; every
quantity here is observed on each run, so plain Bayesian estimation is enough.

The estimates are a fold over the run log (replayed at start-up, then updated per run), so
the store stays the single source of truth and several processes never disagree for long.
A start folds only the runs logged since the fold it kept last (snapshot.py).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

import numpy as np

from qroute_cli.config import Registry
from qroute_cli.routing.latency import (
    DEFAULT_TOKENS_PER_CHAR,
    PRIOR_ACCEPTANCE,
    TEMPLATE_TOKENS,
    Profile,
    base_per_token,
    base_prefill,
    cost_curve,
    draft_prefill,
    log_ratio,
)
from qroute_cli.routing.remote import RemoteProfile
from qroute_cli.numeric import quantile
from qroute_cli.routing.runlog import RunRecord
from qroute_cli.tuning import ANSWER, ROUTING
from qroute_cli.types import DRAFTER_NONE, Estimate, Pair, Prediction


class LogFactorFilter:
    """Kalman filter over log factors: a shared one (index 0) plus one per key.

    The priors, as standard deviations of log factors: the profile may be off for the whole
    machine by about 1.6x (0.5: load, another build, a warmer CPU), one pair or verifier
    differs from that by about 20% more (0.2), one run's timing is noisy by about 15% (0.15),
    and the true factor wanders by about 3% per run (0.03), so old runs fade.
    """

    def __init__(self, shared_var: float = 0.5**2, local_var: float = 0.2**2,
                 obs_var: float = 0.15**2, drift_var: float = 0.03**2) -> None:
        self.local_var = local_var
        self.obs_var = obs_var
        self.drift_var = drift_var  # random-walk step per observation: old evidence fades
        self.index: dict[str, int] = {}
        self.mean = np.zeros(1)
        self.cov = np.array([[shared_var]])

    def _slot(self, key: str) -> int:
        if key not in self.index:
            n = len(self.mean)
            self.index[key] = n
            self.mean = np.append(self.mean, 0.0)
            cov = np.zeros((n + 1, n + 1))
            cov[:n, :n] = self.cov
            cov[n, n] = self.local_var
            self.cov = cov
        return self.index[key]

    def factor(self, key: str) -> float:
        """exp(shared + local): the multiplier to apply to the profile's estimate."""
        local = self.mean[self.index[key]] if key in self.index else 0.0
        return math.exp(self.mean[0] + local)

    def state(self) -> dict:
        """Everything the filter has learned, as JSON values (floats round-trip exactly)."""
        return {"local_var": self.local_var, "obs_var": self.obs_var, "drift_var": self.drift_var,
                "keys": list(self.index), "mean": self.mean.tolist(), "cov": self.cov.tolist()}

    @classmethod
    def from_state(cls, state: dict) -> "LogFactorFilter":
        f = cls(local_var=state["local_var"], obs_var=state["obs_var"], drift_var=state["drift_var"])
        f.index = {key: i + 1 for i, key in enumerate(state["keys"])}
        f.mean = np.array(state["mean"], dtype=float)
        f.cov = np.array(state["cov"], dtype=float).reshape(len(f.mean), len(f.mean))
        if len(f.mean) != len(f.index) + 1:
            raise ValueError("a filter's keys and means disagree")
        return f

    def update(self, key: str, y: float) -> None:
        """Observe y = log(observed / profile estimate) for `key`."""
        i = self._slot(key)
        # The observation reads two states, shared and local (h = e_0 + e_i): the products with
        # h are sums of two rows, which keeps a one-shot run's replay of its log cheap.
        cov = self.cov.copy()
        cov.flat[::len(self.mean) + 1] += self.drift_var
        ch = cov[:, 0] + cov[:, i]  # cov @ h (cov is symmetric: also h @ cov)
        s = ch[0] + ch[i] + self.obs_var  # h @ cov @ h + noise
        gain = ch / s
        self.mean = self.mean + gain * (y - (self.mean[0] + self.mean[i]))
        self.cov = cov - np.outer(gain, ch)


@dataclass
class BetaRate:
    """Beta posterior of a rate with exponential forgetting of old trials."""

    ok: float = 0.0
    total: float = 0.0
    decay: float = 0.98  # per update: ~50 runs of memory

    def update(self, ok: int, total: int) -> None:
        self.ok = self.ok * self.decay + ok
        self.total = self.total * self.decay + total

    def mean(self, prior: float, strength: float = 20.0) -> float:
        """The prior counts as `strength` drafted tokens: a few runs' drafts outweigh it."""
        return (self.ok + prior * strength) / (self.total + strength)


@dataclass
class LogCorrection:
    """A drifting log-scale bias learned from innovations log(observed / predicted), where
    the prediction already included the correction (scalar Kalman on a random walk)."""

    mean: float = 0.0
    var: float = 0.7**2  # prior: a factor within about 2x either way
    obs_var: float = 0.6**2  # answer lengths vary a lot from prompt to prompt
    drift_var: float = 0.02**2

    def update(self, innovation: float) -> None:
        self.var += self.drift_var
        gain = self.var / (self.var + self.obs_var)
        self.mean += gain * innovation
        self.var *= 1.0 - gain

    @property
    def factor(self) -> float:
        return math.exp(min(max(self.mean, -3.0), 3.0))  # at most e^3 (20x) either way: a runaway stays bounded


@dataclass
class ForgettingMean:
    """A mean that forgets: each update weighs the past by `decay` (~20 runs of memory)."""

    total: float = 0.0
    weight: float = 0.0
    decay: float = 0.95

    def update(self, x: float) -> None:
        self.total = self.total * self.decay + x
        self.weight = self.weight * self.decay + 1.0

    def mean(self, prior: float, strength: float = 1.0) -> float:
        return (self.total + prior * strength) / (self.weight + strength)


@dataclass
class RunningMean:
    n: float = 0.0
    total: float = 0.0

    def update(self, x: float) -> None:
        self.n += 1
        self.total += x

    def mean(self, prior: float, strength: float = 3.0) -> float:
        """The prior counts as `strength` observations: after a few runs the runs lead."""
        return (self.total + prior * strength) / (self.n + strength)


@dataclass
class LinearFit:
    """Least squares y = a + b x from running sums (prompt tokens from characters)."""

    n: float = 0.0
    sx: float = 0.0
    sy: float = 0.0
    sxx: float = 0.0
    sxy: float = 0.0

    def update(self, x: float, y: float) -> None:
        self.n += 1
        self.sx += x
        self.sy += y
        self.sxx += x * x
        self.sxy += x * y

    def predict(self, x: float, a0: float, b0: float) -> float:
        """The fit, or the default line until 3 points with spread in x exist."""
        if self.n < 3:
            return a0 + b0 * x
        var = self.sxx - self.sx * self.sx / self.n
        # All prompts about as long (lengths spread by under 5 characters): no slope to fit.
        if var < 1e-9 * max(self.sxx, 1.0) or var / self.n < 25.0:
            return self.sy / self.n + b0 * (x - self.sx / self.n)
        b = (self.sxy - self.sx * self.sy / self.n) / var
        a = (self.sy - b * self.sx) / self.n
        return a + max(b, 0.0) * x


@dataclass(frozen=True)
class Residual:
    """What one run needs to be re-predicted with today's factors (for the margin)."""

    pair: str
    verifier: str
    prefill_s: float  # profile-only prefill for the prompt as predicted
    per_token_s: float  # profile-only time per token at the predicted acceptance
    tokens: float  # output tokens as predicted before the run
    observed_s: float
    endpoint: str | None = None  # a remote pair's endpoint: its factors are that server's
    overhead_s: float = 0.0  # a remote pair's network and queue time as predicted


@dataclass
class OnlineEstimates:
    """Corrections on top of the profile and the scorer, updated by every run."""

    target_hit_rate: float = ROUTING.target_hit_rate
    default_margin: float = ROUTING.default_margin
    decode: LogFactorFilter = field(default_factory=LogFactorFilter)
    prefill: LogFactorFilter = field(default_factory=LogFactorFilter)
    acceptance: dict[tuple[str, str], BetaRate] = field(default_factory=dict)
    length: dict[tuple[str, str], RunningMean] = field(default_factory=dict)
    length_bias: dict[tuple[str, str], LogCorrection] = field(default_factory=dict)  # trained lengths
    chars: dict[str, LinearFit] = field(default_factory=dict)  # verifier: prompt tokens ~ chars
    cached: dict[str, RunningMean] = field(default_factory=dict)  # verifier: prompt tokens reused
    residuals: deque = field(default_factory=lambda: deque(maxlen=ROUTING.margin_window))  # recent runs, for the margin
    runs: int = 0
    # Pairs on endpoints, per endpoint: its own shared factor, one local factor per pair.
    remote_decode: dict[str, LogFactorFilter] = field(default_factory=dict)
    remote_prefill: dict[str, LogFactorFilter] = field(default_factory=dict)
    overhead: dict[str, ForgettingMean] = field(default_factory=dict)  # endpoint: network + queue seconds

    # -- keeping ------------------------------------------------------------------

    _FILTERS = ("decode", "prefill")
    _TABLES = {"acceptance": BetaRate, "length": RunningMean, "length_bias": LogCorrection}  # by (name, task)
    _BY_NAME = {"chars": LinearFit, "cached": RunningMean, "overhead": ForgettingMean}
    _BY_ENDPOINT = ("remote_decode", "remote_prefill")

    def state(self) -> dict:
        """Everything learned, as JSON values: from_state(state()) predicts exactly as this does."""
        out: dict = {"target_hit_rate": self.target_hit_rate, "default_margin": self.default_margin,
                     "runs": self.runs, "residuals": [asdict(r) for r in self.residuals]}
        for name in self._FILTERS:
            out[name] = getattr(self, name).state()
        for name in self._TABLES:
            out[name] = [[*key, asdict(v)] for key, v in getattr(self, name).items()]
        for name in self._BY_NAME:
            out[name] = {key: asdict(v) for key, v in getattr(self, name).items()}
        for name in self._BY_ENDPOINT:
            out[name] = {key: f.state() for key, f in getattr(self, name).items()}
        return out

    @classmethod
    def from_state(cls, state: dict) -> "OnlineEstimates":
        """The estimates `state` holds; KeyError, TypeError or ValueError when it is not one."""
        online = cls(target_hit_rate=float(state["target_hit_rate"]), default_margin=float(state["default_margin"]),
                     runs=int(state["runs"]))
        online.residuals.extend(Residual(**r) for r in state["residuals"])
        for name in cls._FILTERS:
            setattr(online, name, LogFactorFilter.from_state(state[name]))
        for name, kind in cls._TABLES.items():
            setattr(online, name, {(who, task): kind(**v) for who, task, v in state[name]})
        for name, kind in cls._BY_NAME.items():
            setattr(online, name, {key: kind(**v) for key, v in state[name].items()})
        for name in cls._BY_ENDPOINT:
            setattr(online, name, {key: LogFactorFilter.from_state(f) for key, f in state[name].items()})
        return online

    # -- reading ------------------------------------------------------------------

    def prompt_tokens(self, verifier: str, chars: int) -> float:
        """Prompt tokens to prefill: a learned line in characters, less the usual cached prefix."""
        fit = self.chars.get(verifier)
        total = fit.predict(chars, TEMPLATE_TOKENS, DEFAULT_TOKENS_PER_CHAR) if fit else \
            TEMPLATE_TOKENS + chars * DEFAULT_TOKENS_PER_CHAR
        cached = self.cached[verifier].mean(0.0) if verifier in self.cached else 0.0
        return max(total - cached, 1.0)

    def acceptance_for(self, pair: str, task: str, prior: float) -> tuple[float, bool]:
        """(rate, learned?): per task shrunk to the pair's pooled rate, shrunk to the prior."""
        pooled = self.acceptance.get((pair, "*"))
        if pooled is None or pooled.total == 0:
            return prior, False
        base = pooled.mean(prior)
        task_rate = self.acceptance.get((pair, task))
        return (task_rate.mean(base) if task_rate else base), True

    def length_for(self, verifier: str, task: str, prior: float) -> tuple[float, bool]:
        for key in ((verifier, task), (verifier, "*")):
            m = self.length.get(key)
            if m is not None and m.n > 0:
                return m.mean(prior), True
        return prior, False

    def length_factor(self, verifier: str, task: str) -> float:
        """What to multiply a trained predictor's length by for this verifier and task type."""
        bias = self.length_bias.get((verifier, task))
        return bias.factor if bias else 1.0

    def margin(self) -> float:
        """Multiplier on predicted latency so that about target_hit_rate of runs fit.

        Recent runs are re-predicted with today's factors, so the margin measures what the
        model still gets wrong (length, noise), not errors it has already learned away.
        """
        if len(self.residuals) < ROUTING.margin_min_runs:
            return self.default_margin
        logs = []
        for r in self.residuals:
            if r.endpoint is not None:
                pred = (self.overhead_for(r.endpoint, r.overhead_s)
                        + r.prefill_s * self._remote(self.remote_prefill, r.endpoint).factor(r.pair)
                        + r.tokens * r.per_token_s * self._remote(self.remote_decode, r.endpoint).factor(r.pair))
            else:
                pred = (r.prefill_s * self.prefill.factor(r.verifier)
                        + r.tokens * r.per_token_s * self.decode.factor(r.pair))
            if pred > 0 and r.observed_s > 0:
                logs.append(math.log(r.observed_s / pred))
        if len(logs) < ROUTING.margin_min_runs:
            return self.default_margin
        q = quantile(logs, self.target_hit_rate)
        return min(max(math.exp(q), 1.0), ROUTING.margin_max)

    @staticmethod
    def _remote(filters: dict[str, LogFactorFilter], endpoint: str) -> LogFactorFilter:
        return filters.setdefault(endpoint, LogFactorFilter())

    def overhead_for(self, endpoint: str, prior: float) -> float:
        """Network and queue seconds of `endpoint`: the calibrated value until runs say more."""
        m = self.overhead.get(endpoint)
        return m.mean(prior) if m is not None else prior

    # -- learning -----------------------------------------------------------------

    def observe(self, rec: RunRecord, profile: Profile | None, registry: Registry, *, timing: bool = True,
                remote: dict[str, RemoteProfile] | None = None) -> None:
        """Fold one run into the estimates; timing=False learns only acceptance and lengths
        (for runs timed before the current calibration). `remote`: the endpoint pairs' profiles."""
        self.runs += 1
        pair = registry.pairs.get(rec.pair)
        if rec.drafted:
            for key in ((rec.pair, rec.task), (rec.pair, "*")):
                self.acceptance.setdefault(key, BetaRate()).update(rec.accepted, rec.judged)
        if rec.output_tokens > 0 and rec.finish != "interrupted":
            # Runs cut at max_tokens count as they are: what we predict is min(length, max_tokens).
            for key in ((rec.verifier, rec.task), (rec.verifier, "*")):
                self.length.setdefault(key, RunningMean()).update(rec.output_tokens)
            if rec.predicted_tokens and rec.scorer != "prior":
                # The prediction included the correction, so the log ratio is the innovation.
                self.length_bias.setdefault((rec.verifier, rec.task), LogCorrection()).update(
                    math.log(rec.output_tokens / rec.predicted_tokens))
        if rec.prompt_chars > 0 and rec.prompt_tokens > 0:
            self.chars.setdefault(rec.verifier, LinearFit()).update(rec.prompt_chars, rec.prompt_tokens)
            self.cached.setdefault(rec.verifier, RunningMean()).update(rec.prompt_cached)
        if not timing:
            return
        if pair is not None and pair.remote:
            rp = (remote or {}).get(pair.name)
            if rp is not None:
                self._observe_remote(rec, pair.endpoint, rp)
            return
        if pair is None or profile is None or not all(m in profile.models for m in pair.model_names):
            return
        new_tokens = max(rec.prompt_tokens - rec.prompt_cached, 1)
        prefill_base = base_prefill(profile, registry, pair, new_tokens)
        drafter_prefill = draft_prefill(profile, pair, new_tokens) * self.prefill.factor(pair.drafter)
        # Judge the speed model at the acceptance it predicted with, not the observed one: the
        # drafter stops at unsure tokens, so observed acceptance overstates tokens per step, and
        # learning against it would bias every later prediction.
        acc = rec.predicted_acceptance if rec.predicted_acceptance is not None else rec.token_acceptance
        per_token_base, _ = base_per_token(profile, pair, acc)
        if rec.predicted_tokens:
            self.residuals.append(Residual(pair.name, pair.verifier, prefill_base, per_token_base,
                                           rec.predicted_tokens, rec.observed_latency_s - drafter_prefill))
        y = log_ratio(rec.ttft_s, prefill_base)
        if y is not None:
            self.prefill.update(pair.verifier, y)
        if rec.output_tokens >= 2:
            # The drafter reads the prompt after the first token: not the decode loop's cost.
            per_token = (rec.observed_latency_s - rec.ttft_s - drafter_prefill) / (rec.output_tokens - 1)
            y = log_ratio(per_token, per_token_base)
            if y is not None:
                self.decode.update(pair.name, y)


    def _observe_remote(self, rec: RunRecord, endpoint: str, rp: RemoteProfile) -> None:
        """A remote run: the server's prefill and decode against the pair's remote profile, and
        the overhead from wall clock less server time (by wall clock alone without timings)."""
        new_tokens = max(rec.prompt_tokens - rec.prompt_cached, 1) if rec.prompt_tokens else \
            self.prompt_tokens(rec.verifier, rec.prompt_chars)
        overhead = self.overhead_for(endpoint, rp.overhead_s)
        if rec.predicted_tokens:
            self.residuals.append(Residual(rec.pair, rec.verifier, rp.prefill(new_tokens), rp.decode_s,
                                           rec.predicted_tokens, rec.observed_latency_s, endpoint, rp.overhead_s))
        server = rec.server_prefill_s is not None and rec.server_decode_s is not None
        if server:
            prefill_s = rec.server_prefill_s
            decode_s = rec.server_decode_s
            self.overhead.setdefault(endpoint, ForgettingMean()).update(
                max(rec.observed_latency_s - rec.server_prefill_s - rec.server_decode_s, 0.0))
        else:
            prefill_s = rec.ttft_s - overhead
            decode_s = rec.observed_latency_s - rec.ttft_s
        y = log_ratio(prefill_s, rp.prefill(new_tokens))
        if y is not None and rec.output_tokens > 0:
            self._remote(self.remote_prefill, endpoint).update(rec.pair, y)
        if rec.output_tokens >= 2:
            y = log_ratio(decode_s / (rec.output_tokens - 1), rp.decode_s)
            if y is not None:
                self._remote(self.remote_decode, endpoint).update(rec.pair, y)


def estimate_remote(
    rp: RemoteProfile,
    pair: Pair,
    online: OnlineEstimates,
    *,
    chars: int,
    task: str,
    prediction: Prediction,
    max_tokens: int,
) -> Estimate:
    """Predicted overhead + prefill, per-token time and length of a pair on its endpoint.

    The overhead rides in the prefill (it is paid before the first token); the per-token time
    is the server's decode with its own drafting, so no draft length or cost curve applies.
    """
    n_prompt = online.prompt_tokens(pair.verifier, chars)
    prefill = online.overhead_for(pair.endpoint, rp.overhead_s) + \
        rp.prefill(n_prompt) * online._remote(online.remote_prefill, pair.endpoint).factor(pair.name)
    per_token = rp.decode_s * online._remote(online.remote_decode, pair.endpoint).factor(pair.name)
    tokens = _length(pair, online, task, prediction)
    acceptance = None
    if pair.drafter_kind != DRAFTER_NONE:
        acceptance = online.acceptance_for(pair.name, task, PRIOR_ACCEPTANCE[pair.drafter_kind])[0]
    return Estimate(pair.name, prefill, per_token, min(max(tokens, 1.0), float(max_tokens)), acceptance)


def _length(pair: Pair, online: OnlineEstimates, task: str, prediction: Prediction) -> float:
    """Expected output tokens of the pair's verifier: the trained predictor's (corrected), else
    the running mean of this verifier and task type, else the prior."""
    if prediction.scorer != "prior" and pair.verifier in prediction.length:
        return float(prediction.length[pair.verifier]) * online.length_factor(pair.verifier, task)
    prior_len = float(prediction.length.get(pair.verifier, ANSWER.default_length))
    return online.length_for(pair.verifier, task, prior_len)[0]


def estimate(
    profile: Profile,
    registry: Registry,
    online: OnlineEstimates,
    pair_name: str,
    *,
    chars: int,
    task: str,
    prediction: Prediction,
    max_tokens: int,
) -> Estimate:
    """Predicted prefill, per-token time and length of one pair on one prompt.

    Acceptance and length come from a trained predictor when it covers the pair, else from
    the running averages of this pair (or verifier) and task type, shrunk to the priors (for
    acceptance the prior scorer's rate for the task type, where it has one).
    """
    pair = registry.pairs[pair_name]
    trained = prediction.scorer != "prior"
    n_prompt = online.prompt_tokens(pair.verifier, chars)
    prefill = base_prefill(profile, registry, pair, n_prompt) * online.prefill.factor(pair.verifier)
    drafter_prefill = draft_prefill(profile, pair, n_prompt) * online.prefill.factor(pair.drafter)

    tokens = _length(pair, online, task, prediction)
    acceptance = None
    if pair.drafter_kind != DRAFTER_NONE:
        if trained and pair.name in prediction.acceptance:
            acceptance = float(prediction.acceptance[pair.name])
        else:  # what the runs taught, shrunk to the prior scorer's per-task rate or the kind's
            prior_acc = float(prediction.acceptance.get(pair.name, PRIOR_ACCEPTANCE[pair.drafter_kind]))
            acceptance = online.acceptance_for(pair.name, task, prior_acc)[0]
    per_token, k = base_per_token(profile, pair, acceptance)
    per_token *= online.decode.factor(pair.name)
    tokens = min(max(tokens, 1.0), float(max_tokens))
    return Estimate(pair.name, prefill, per_token, tokens, acceptance, k, drafter_prefill,
                    cost_curve(profile, pair) if acceptance is not None else None)
