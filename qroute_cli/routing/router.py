"""The Router: scorer + calibrated latency model + online estimates -> a pair per prompt.

It wires the parts together and keeps state; the decision itself is the pure function in
policy.py. Each decision carries the prediction it was made on, which `record` reads back:
nothing is kept between the two calls. Routing overhead (task type, prediction, latency
estimates, decision) is timed per prompt; loading the store, the profile and the scorer
happens once, before that.

Predictions are made for the thread count the pool will give the answer (fewer than the
profile's when other processes are busy), and, for a task type the scorer was not trained
on, with a conservative answer length; the decision's reason says when either applies.
"""

from __future__ import annotations

import functools
import math
import re
import time
from dataclasses import replace
from typing import Callable, ContextManager, Sequence

from qroute_cli import paths
from qroute_cli.routing import policy
from qroute_cli.config import Registry
from qroute_cli.errors import EndpointError, QrouteError, UsageError
from qroute_cli.routing.latency import Machine, Profile, current_machine, missing_models
from qroute_cli.routing.online import OnlineEstimates, estimate, estimate_remote
from qroute_cli.routing import remote
from qroute_cli.models.cache import installed_pairs
from qroute_cli.routing.features import task_type  # one task label for the predictor and the averages
from qroute_cli.routing.scoring import PriorScorer, Scorer, default_scorer, prompt_text
from qroute_cli.tuning import ROUTING
from qroute_cli.routing.runlog import RunRecord, Store, prompt_hash
from qroute_cli.types import DRAFTER_NONE, Generation, Message, Pair, RouteDecision

_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*(ms|s|sec|secs|seconds?)?\s*$", re.I)


def parse_budget(text: str) -> float:
    """'5s', '800ms', '2.5' (seconds) -> seconds; zero, negative or garbage -> UsageError."""
    hint = "Give seconds or milliseconds, e.g. --budget 5s or --budget 800ms."
    raw = str(text).strip()
    if not raw:
        raise UsageError("The budget is empty.", hint)
    if raw.startswith("-"):
        raise UsageError(f"The budget must be positive, got '{raw}'.", hint)
    m = _BUDGET.match(raw)
    if not m:
        raise UsageError(f"Cannot read the budget '{raw}'.", hint)
    value = float(m.group(1)) / (1000.0 if (m.group(2) or "").lower() == "ms" else 1.0)
    if not math.isfinite(value) or value <= 0:
        raise UsageError(f"The budget must be positive, got '{raw}'.", hint)
    return value


# A task type the scorer was not trained on (code: the shipped predictor saw GSM8K, NQ and
# WritingPrompts only, and guesses code answers far too short) is assumed to run to max_tokens
# until this many runs of it are in the log; after that, to the longest mean length any
# verifier gave it, when that is longer than the scorer's guess.
UNSEEN_TASK_RUNS = 3


def unseen_task_tokens(online: OnlineEstimates, task: str, max_tokens: int) -> tuple[float, bool]:
    """(answer length to assume, conservative?) for a task type outside the scorer's training."""
    seen = [m for (_, t), m in online.length.items() if t == task and m.n > 0]
    if sum(m.n for m in seen) < UNSEEN_TASK_RUNS:
        return float(max_tokens), True
    return min(max(m.total / m.n for m in seen), float(max_tokens)), False


def for_learning(rec: RunRecord) -> RunRecord:
    """An answer cut at the deadline says how fast it ran, not how long it would have been:
    it teaches speed only, as an interrupted one does."""
    return replace(rec, finish="interrupted") if rec.finish == "deadline" else rec


class ThreadFittedPool:
    """The pool as first-use calibration sees it: each model is measured with the threads an
    answer would get now (on a busy machine all cores would measure llama.cpp's spinning, many
    times slower than any answer runs), and the count is kept with the model's profile."""

    def __init__(self, pool) -> None:
        self.pool, self.registry = pool, pool.registry
        self.threads: dict[str, int] = {}

    def get(self, name: str, draft: bool = False):
        backend = self.pool.get(name, draft=draft)
        n = self.pool.fit_threads([backend])
        if n is not None:
            self.threads[self.pool.slot(name, draft)] = n  # the profile's key for this copy
        return backend


class Router:
    """Chooses a pair per prompt and learns from every run.

    `pool` (optional) lends its loaded models to first-use calibration; `seed` makes the
    random strategy repeatable; `explain`: the caller shows every candidate, so a forced pair
    is predicted too (see _wants_prediction); `warn_over_budget`: say so when no pair fits the
    budget (the bench, whose budget sweep means it, turns it off). Store, profile and scorer default to the user
    data dir.
    """

    def __init__(
        self,
        registry: Registry,
        *,
        strategy: str | None = None,
        budget_s: float | None = None,
        scorer: Scorer | None = None,
        store: Store | None = None,
        profile: Profile | None = None,
        console=None,
        progress: Callable[..., ContextManager] | None = None,
        pool=None,
        seed: int | None = None,
        endpoints=None,
        remote_profiles: dict[str, remote.RemoteProfile] | None = None,
        explain: bool = False,
        warn_over_budget: bool = True,
    ) -> None:
        self.registry = registry
        self.warn_over_budget = warn_over_budget
        self.explain = explain  # every candidate is shown, a forced pair's too: always predict
        self.set_strategy(strategy or registry.defaults.strategy)
        if budget_s is None:
            budget_s = parse_budget(registry.defaults.budget)
        if not math.isfinite(budget_s) or budget_s <= 0:
            raise UsageError(f"The budget must be positive, got {budget_s:g} s.")
        self.budget_s = budget_s
        self.console = console  # a Rich console for warnings; None: standard error
        self.progress = progress  # progress(console=...) -> a Rich Progress for first-use calibration
        self.pool = pool
        self.seed = seed
        self._scorer = scorer
        self._store = store
        self._own_store = store is None
        self.profile = profile
        self._profile_given = profile is not None
        self.online = OnlineEstimates()
        self._ready = False
        self._warned: set[str] = set()
        self._n = 0
        self._machine: Machine | None = None
        self._endpoints = endpoints  # clients of the remote endpoints and their health (made on first use)
        self._own_endpoints = endpoints is None
        self.remote_profiles = remote_profiles  # by pair; None: loaded from the data dir when first needed
        self._remote_given = remote_profiles is not None

    def set_strategy(self, text: str) -> None:
        """Switch strategy ('quality', 'cost', 'random', 'static:PAIR'); UsageError when unknown."""
        self.strategy, self.static_pair = policy.parse_strategy(text, list(self.registry.pairs))
        self.strategy_text = text.strip()

    # -- messages -----------------------------------------------------------------

    def _say(self, text: str, style: str = "yellow") -> None:
        from rich.text import Text

        if self.console is None:
            from rich.console import Console

            self.console = Console(stderr=True, highlight=False)
        self.console.print(Text(text, style=style), highlight=False)

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            self._say(text)

    # -- lazy state ---------------------------------------------------------------

    @property
    def machine(self) -> Machine:
        if self._machine is None:
            pool = self.pool
            self._machine = current_machine(pool.n_threads if pool is not None else None,
                                            pool.n_gpu_layers if pool is not None else 0,
                                            pool.draft_gpu_layers if pool is not None else None)
        return self._machine

    @property
    def scorer(self) -> Scorer:
        if self._scorer is None:
            self._scorer = default_scorer(self.registry, self._warn_once)
        return self._scorer

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = Store(keep_prompts=paths.log_prompts(), notify=self._say)
        return self._store

    @property
    def endpoints(self):
        """The remote endpoints' clients and health (qroute_cli.endpoints.Endpoints)."""
        if self._endpoints is None:
            from qroute_cli.endpoints import Endpoints

            self._endpoints = Endpoints(self.registry)
        return self._endpoints

    def candidates(self) -> list[Pair]:
        """Pairs whose model files are present (fake models always are), less those on an
        endpoint that failed lately."""
        pairs = installed_pairs(self.registry)
        if not any(p.remote for p in pairs):
            return pairs
        health = self.endpoints.health
        return [p for p in pairs if not health.is_down(p.endpoint)]

    def endpoint_failed(self, exc: EndpointError, pair: str | None = None) -> None:
        """An endpoint failed an answer: leave its pairs out for a while (when it, not the request,
        was at fault), say so, and keep a note in the run log."""
        down = self.endpoints.failed(exc)
        left_out = f" Its pairs are left out for {self.registry.endpoints[exc.endpoint].down_for_s:g} s." if down else ""
        self._say(f"{exc.message}{left_out}")
        try:
            self.store.note(f"endpoint {exc.endpoint}", f"{'down' if down else 'failed'}"
                                                         f"{f' (pair {pair})' if pair else ''}: {exc.message}")
        except QrouteError:
            pass

    def _remote_ready(self, pairs: Sequence[Pair], measure: bool) -> None:
        """Load the remote profiles; measure the endpoint pairs that have none (or one of
        another server). An endpoint that fails its calibration is marked down, not fatal."""
        if self.remote_profiles is None:
            self.remote_profiles = remote.load_profiles(self._warn_once)
        if not measure or self._remote_given:
            return
        measured = False
        for pair in pairs:
            if not pair.remote or self.endpoints.health.is_down(pair.endpoint):
                continue
            endpoint = self.registry.endpoints[pair.endpoint]
            have = self.remote_profiles.get(pair.name)
            if have is not None and have.identity == remote.identity(endpoint, endpoint.model_for(pair)):
                continue
            self._say(f"No calibration for {pair.name} on endpoint {endpoint.name} yet: measuring now (3 short "
                      f"requests). `qroute calibrate --endpoint {endpoint.name}` measures again.")
            try:
                self.remote_profiles[pair.name] = remote.calibrate_pair(self.endpoints, pair)
                measured = True
            except EndpointError as exc:
                self.endpoint_failed(exc, pair.name)
        if measured:
            self.online, self._ready = OnlineEstimates(), False  # re-fold against the new profiles
            try:
                remote.save_profiles(self.remote_profiles)
            except OSError as exc:
                self._warn_once(f"Could not save the endpoint profiles ({exc.strerror or exc}); "
                                "they are used for this run only.")

    def _remote_since(self, pair: str) -> float:
        from datetime import datetime

        rp = (self.remote_profiles or {}).get(pair)
        try:
            return datetime.fromisoformat(rp.measured_at).timestamp() if rp else float("inf")
        except ValueError:
            return 0.0

    def profile_for(self, pairs: Sequence[Pair]) -> Profile | None:
        """The calibration profile the runs of `pairs` will draft by, measuring the models it
        lacks first, as the first decision would."""
        self._ensure_ready(pairs, measure=True)
        return self.profile

    def _ensure_ready(self, pairs: Sequence[Pair], measure: bool, forced: Pair | None = None) -> None:
        """Load profile, store and scorer once (the scorer only where `forced` needs it, see
        _wants_prediction); measure models the profile lacks."""
        if not self._ready and not self._profile_given:
            self.profile = self._load_profile()
        if any(p.remote for p in pairs):
            self._remote_ready(pairs, measure)
        if measure and not self._profile_given:
            need = missing_models(self.profile, self.registry, pairs)
            if need:
                self._measure(need)
                self.online, self._ready = OnlineEstimates(), False  # re-fold against the new profile
        if not self._ready:
            self._fold()  # after measuring: the factors are relative to the profile
            self._ready = True
        if self._scorer is None and self._predicts(pairs) and self._wants_prediction(forced):
            _ = self.scorer

    def _fold(self) -> None:
        """Learn from this machine's logged runs: those after the kept estimates where they
        fit (snapshot.py), the latest ROUTING.replay_runs otherwise."""
        from qroute_cli.routing import snapshot

        store = self.store
        if not store.available:
            return
        key = snapshot.fingerprint(self.machine.key, self.profile, self.remote_profiles, self.registry)
        path = snapshot.snapshot_path(store.path)
        kept = snapshot.load(path, key, store.stamp)
        runs = self._replay(after=kept[1]) if kept else []
        if kept and len(runs) < ROUTING.replay_runs:
            self.online = kept[0]
        else:  # no estimates kept, or more runs since than a fold reads: start over
            runs = self._replay()
        since = self._calibrated_since()
        for _, rec in runs:
            # A calibration resets what runs taught about speed (they may have been timed
            # under other load); acceptance and answer lengths stay learned.
            # The log does not say how many threads a run had: speed is learned against
            # the profile as measured.
            timed = rec.ts >= (self._remote_since(rec.pair) if rec.endpoint else since)
            self.online.observe(for_learning(rec), self.profile, self.registry, timing=timed,
                                remote=self.remote_profiles)
        if len(runs) >= snapshot.SAVE_AFTER:
            snapshot.save(path, key, self.online, runs[-1][0], runs[-1][1].ts)

    def _wants_prediction(self, forced: Pair | None) -> bool:
        """Whether the trained scorer predicts this decision. A routed one is predicted; a
        forced pair only where the scorer's prediction is shown or needed: it runs on an
        endpoint, the caller explains every candidate (`explain`), or the scorer is loaded
        already. A forced local pair otherwise never loads the predictor: a drafting one drafts
        by its prior estimate (_drafts_by_prior), a plain one runs as it does without a
        profile; either run still teaches speed, acceptance and length."""
        return forced is None or forced.remote or self.explain or self._scorer is not None

    def _drafts_by_prior(self, forced: Pair | None) -> bool:
        """Whether the forced local pair `forced` drafts by the prior scorer's estimate, not
        the trained predictor's (which then need not load): the acceptance its logged runs
        taught, shrunk to the pair's mean acceptance for the prompt's task type in the
        predictor's training data (scoring.acceptance_priors). Per prompt the predictor tells
        acceptance no better than that mean does (predictor/REPORT.md, held-out acceptance),
        and loading it would cost a one-shot run about 0.1 s."""
        return (forced is not None and not forced.remote and forced.drafter != DRAFTER_NONE and not self.explain
                and self._scorer is None)

    def _predicts(self, pairs: Sequence[Pair]) -> bool:
        """Whether any of `pairs` can get an estimate: without a profile, local pairs get none
        (only with --pair), so a one-shot `qroute run --pair` never loads the predictor."""
        return self.profile is not None or any(p.remote for p in pairs)

    def _load_profile(self) -> Profile | None:
        from qroute_cli.routing.latency import usable_profile

        return usable_profile(self.machine, self._say)  # one profile per setup: others stay

    def _replay(self, after: int = 0) -> list[tuple[int, RunRecord]]:
        """(id, run) of the past runs on this machine to learn from (those after run `after`),
        oldest first."""
        try:
            return self.store.tail(ROUTING.replay_runs, machine=self.machine.key, after=after)
        except Exception as exc:  # a broken store must never stop routing
            self._warn_once(f"Could not read the learning store: {exc}")
            return []

    def _calibrated_since(self) -> float:
        from datetime import datetime

        stamps = []
        for m in (self.profile.models.values() if self.profile else ()):
            try:
                stamps.append(datetime.fromisoformat(m.measured_at).timestamp())
            except (TypeError, ValueError):
                continue
        return max(stamps, default=0.0)

    def _measure(self, names: list[str]) -> None:
        from rich.progress import Progress

        from qroute_cli.routing.calibrate import QUICK, calibrate, calibration_steps
        from qroute_cli.routing.latency import save_profile
        from qroute_cli.generation.pool import ModelPool

        self._say(
            f"No calibration for {', '.join(names)} on this machine yet: measuring now (quick). "
            "Run `qroute calibrate` for a full profile."
        )
        pool = self.pool or ModelPool(self.registry)
        fitted = ThreadFittedPool(pool)
        try:
            # Without a progress factory from the caller, a disabled Rich Progress: calibration runs silently.
            bar_factory = self.progress or functools.partial(Progress, disable=True)
            with bar_factory(console=self.console) as progress:
                bar = progress.add_task("calibrating", total=calibration_steps(self.registry, names, self.machine, QUICK))
                self.profile = calibrate(
                    fitted, names, self.machine, quick=True, base=self.profile,
                    advance=lambda n: progress.advance(bar, n),
                    on_model=lambda name: progress.update(bar, description=f"calibrating {name}"),
                )
        finally:
            if pool is not self.pool:
                pool.close()
        for name, n in fitted.threads.items():
            if name in self.profile.models and n < self.profile.machine.threads:
                self.profile.models[name] = replace(self.profile.models[name], threads=n)
        try:
            save_profile(self.profile)
        except OSError as exc:  # a read-only data dir: the measurement still serves this run
            self._warn_once(f"Could not save the calibration profile ({exc.strerror or exc}); "
                            "it is used for this run only.")

    # -- deciding -----------------------------------------------------------------

    def decide(self, messages: Sequence[Message], *, max_tokens: int, forced_pair: str | None = None) -> RouteDecision:
        """Choose a pair for `messages` (or take `forced_pair`) and say why."""
        forced = self.registry.pair(forced_pair) if forced_pair is not None else None
        pairs = self.candidates()
        self._ensure_ready(pairs, measure=forced is None, forced=forced)
        if any(p.remote for p in pairs):
            pairs = self.candidates()  # a calibration may have found an endpoint down
        if forced_pair is None and not pairs:
            self._all_down()
        t0 = time.perf_counter()
        text = prompt_text(messages)
        chars = sum(len(m.content) for m in messages)
        task = task_type(text)
        predicts = self._predicts(pairs) and self._wants_prediction(forced)
        prediction = self.scorer.predict(text) if predicts else None
        if not predicts and self._predicts(pairs) and self._drafts_by_prior(forced):
            # Its draft lengths follow the estimated acceptance: an estimate of it alone, by the
            # profile, the per-task priors and what the runs taught (lengths too), with no
            # trained predictor.
            predicts, pairs, prediction = True, [forced], PriorScorer(self.registry).predict(text)
        # Predict at the thread count this answer will get, not the one the profile was measured at.
        threads = self.pool.next_threads() if self.pool is not None else None
        profile = self.profile.at_threads(threads) if self.profile is not None else None
        trained = getattr(self._scorer, "tasks", None) if predicts else None
        unseen = trained is not None and task not in trained
        floor, conservative = unseen_task_tokens(self.online, task, max_tokens) if unseen else (0.0, False)
        options = []
        for pair in pairs if predicts else ():
            if pair.remote:
                rp = (self.remote_profiles or {}).get(pair.name)
                if rp is None:
                    continue  # its endpoint could not be measured: routed once it can
                est = estimate_remote(rp, pair, self.online, chars=chars, task=task, prediction=prediction,
                                      max_tokens=max_tokens)
                if est.tokens < floor:
                    est = replace(est, tokens=floor)
                quality = float(prediction.quality.get(pair.verifier, self.registry.models[pair.verifier].quality_prior))
                options.append(policy.Option(pair.name, quality, est))
                continue
            if profile is None or missing_models(profile, self.registry, [pair]):
                continue  # only with --pair and no profile: nothing to predict from
            est = estimate(profile, self.registry, self.online, pair.name, chars=chars, task=task,
                           prediction=prediction, max_tokens=max_tokens)
            if est.tokens < floor:
                est = replace(est, tokens=floor)
            quality = float(prediction.quality.get(pair.verifier, self.registry.models[pair.verifier].quality_prior))
            options.append(policy.Option(pair.name, quality, est))
        seed = None if self.seed is None else self.seed + self._n
        ctx = policy.Context(budget_s=self.budget_s, max_tokens=max_tokens, margin=self.online.margin(),
                               static_pair=self.static_pair, seed=seed)
        result = policy.decide(self.strategy, options, ctx, forced=forced_pair)
        if options:
            notes = self._notes(task, conservative, threads if profile is not self.profile else None, max_tokens)
            result = replace(result, reason=" ".join([result.reason] + notes))
        overhead = (time.perf_counter() - t0) * 1000
        self._n += 1
        chosen = next((o for o in options if o.pair == result.chosen), None)
        result = replace(
            result, overhead_ms=overhead, task=task, prompt_chars=chars,
            predicted=chosen.estimate.capped(result.max_tokens or max_tokens) if chosen else None,
            estimates=tuple(o.estimate for o in options),
        )
        if self.warn_over_budget and options and not any(c.fits for c in result.candidates) \
                and forced_pair is None and self.strategy in ("quality", "cost"):
            self._say(f"Warning: {result.reason}")
        return result

    def _all_down(self) -> None:
        """No pair is left: say which endpoints are down and why."""
        downs = {p.endpoint: self.endpoints.health.down(p.endpoint) for p in installed_pairs(self.registry)
                 if p.remote}
        downs = {name: d for name, d in downs.items() if d is not None}
        if downs:
            name, mark = next(iter(downs.items()))
            more = f" (and {len(downs) - 1} more endpoint{'s' if len(downs) > 2 else ''})" if len(downs) > 1 else ""
            raise EndpointError(f"No pair can run: every one is on an endpoint that is down{more}. {mark.reason}",
                                "Start the server again, or install a local model: qroute models pull smollm2-135m",
                                endpoint=name, kind="refused")

    def _notes(self, task: str, conservative: bool, fewer_threads: int | None, max_tokens: int) -> list[str]:
        """What the reason must add about how the estimates were made (`fewer_threads`: the
        thread count the costs were scaled to, when it is fewer than the calibration had)."""
        notes = []
        if conservative:
            notes.append(
                f"The estimate is conservative: the predictor was not trained on {task} prompts, so the "
                f"answer is assumed to run to max tokens ({max_tokens}) until {UNSEEN_TASK_RUNS} of them are logged."
            )
        if fewer_threads is not None:
            notes.append(f"Predicted for {fewer_threads} llama.cpp thread{'s' if fewer_threads > 1 else ''}, "
                         "fewer than the calibration had: other processes keep the other cores busy.")
        return notes

    # -- learning -----------------------------------------------------------------

    def record(self, decision: RouteDecision, generation: Generation, messages: Sequence[Message]) -> None:
        """Log the run against the prediction `decision` carries and update the online
        estimates; a store failure only warns."""
        text = prompt_text(messages)
        # A decision not made by decide() carries no prompt facts: judge them from the messages.
        task = decision.task or task_type(text)
        chars = decision.prompt_chars if decision.prompt_chars is not None else sum(len(m.content) for m in messages)
        run = decision.predicted
        # A router that never loaded its scorer: "none" when nothing was predicted for the run,
        # "prior" when a forced pair was predicted by the priors and the runs (_drafts_by_prior).
        if self._scorer is None:
            scorer = "none" if run is None else PriorScorer.name
        else:
            scorer = getattr(self._scorer, "name", "?")
        pair = self.registry.pair(generation.pair or decision.chosen)
        s = generation.stats
        cap = decision.max_tokens
        rec = RunRecord(
            ts=time.time(), machine=self.machine.key, prompt_hash=prompt_hash(text), task=task,
            prompt_chars=chars, pair=pair.name, verifier=pair.verifier, drafter=pair.drafter,
            strategy=decision.strategy, scorer=scorer,
            observed_latency_s=s.latency_s, ttft_s=s.ttft_s, prompt_tokens=s.prompt_tokens,
            output_tokens=s.output_tokens, prompt_cached=s.prompt_cached, drafted=s.drafted,
            accepted=s.accepted, checked=s.checked, finish=generation.finish_reason, budget_s=decision.budget_s,
            max_tokens=cap, predicted_latency_s=run.latency_s if run else None,
            predicted_tokens=run.tokens if run else None, predicted_acceptance=run.acceptance if run else None,
            overhead_ms=decision.overhead_ms, prompt=text, endpoint=pair.endpoint,
            server_prefill_s=s.server_prefill_s, server_decode_s=s.server_decode_s,
        )
        try:
            self.store.append(rec)
        except QrouteError as exc:
            self._warn_once(f"{exc.message} Learning is off for this run.")
        # Speed is judged against the profile at the thread count the run had.
        threads = self.pool.last_threads if self.pool is not None else None
        profile = self.profile.at_threads(threads) if self.profile is not None else None
        self.online.observe(for_learning(rec), profile, self.registry, remote=self.remote_profiles)

    def close(self) -> None:
        if self._store is not None and self._own_store:
            self._store.close()
            self._store = None
        if self._endpoints is not None and self._own_endpoints:
            self._endpoints.close()
            self._endpoints = None
