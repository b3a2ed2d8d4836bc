"""The HTTP app of `qroute serve`: OpenAI's chat and completions endpoints in front of answer().

One local generation runs at a time: llama.cpp already uses every core for one answer, so a
second one would only slow both. Each request is routed once, when it arrives, and queued
where its pair runs: local pairs wait for a single thread that owns the model pool; a pair on
a remote endpoint runs on that endpoint's own threads, up to its `max_concurrency` at once, so
several machines answer side by side. The router and the learning store are shared by these
threads: each decision and record is made under one lock (the store's SQLite connection takes
any thread, one at a time). The event loop stays free to accept, stream and time out requests.

The time a request waits in the queue counts against its latency budget: a request for a local
pair is routed again when its turn comes, on what is left, so it picks a faster pair (or caps
the answer) when the wait was long, and a request whose budget ran out while it waited gets a
503 (code `budget_exhausted`) instead of an answer that is late before it starts. A pinned pair (`qroute/pair/NAME`) is not routed and is
answered however long it waited, unless `hard_budget` asks for the deadline.

A client that goes away stops its answer: the text callback raises ClientGone, a
KeyboardInterrupt, which the engine already turns into finish_reason "interrupted" for Ctrl-C;
answer() records the partial run as `qroute run` does.

An endpoint that fails before any of its text was sent is left out and the request goes to the
next best pair, on that pair's queue (a response sent whole may fail over even mid-answer: its
client has seen nothing yet); the response's `qroute` object lists the failovers, and /metrics
counts answers and failures per endpoint.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route as Endpoint

from qroute_cli.answer import Answer, Failover, answer
from qroute_cli.errors import EndpointError, PromptTooLongError, QrouteError, UsageError
from qroute_cli.models.cache import installed_pairs
from qroute_cli.routing import policy
from qroute_cli.routing.router import parse_budget
from qroute_cli.serve import models as api
from qroute_cli.serve.metrics import Metrics
from qroute_cli.types import GenerationConfig, Message, Pair

log = logging.getLogger("qroute.serve")

# A request body larger than this is refused (413): a chat history that long would not fit
# any local model's context anyway.
MAX_BODY_BYTES = 1_000_000

# How often a waiting handler checks that its client is still there.
POLL_S = 0.1


class ApiError(Exception):
    """A request the server answers with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.body = status, api.error_body(message, type_, param, code)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body, status_code=self.status)


def _qroute_error(exc: QrouteError, param: str | None = None, status: int = 400) -> ApiError:
    message = exc.message + (f" {exc.hint}" if exc.hint else "")
    return ApiError(status, message, param=param)


class ClientGone(KeyboardInterrupt):
    """Raised from the text callback when the client left or the server stops: the engine ends
    the answer there, as on Ctrl-C."""


class BudgetSpent(Exception):
    """The request's budget ran out while it waited for the model."""


@dataclass
class Job:
    """One request's work for the worker."""

    endpoint: str
    messages: list[Message]
    config: GenerationConfig
    strategy: str | None  # None: the server's
    budget_s: float  # the request's whole budget, queue included
    pair: str | None  # pinned: no routing
    hard_budget: bool
    arrived: float = field(default_factory=time.perf_counter)
    stop: threading.Event = field(default_factory=threading.Event)
    on_start: Callable[[Pair], None] | None = None  # the pair is chosen; generation begins
    on_text: Callable[[str], None] | None = None


@dataclass(frozen=True)
class Ran:
    """A job's answer and its times (wall: from arrival to the end of the answer)."""

    result: Answer
    queue_s: float
    wall_s: float
    budget_s: float


class Move(Exception):
    """A decision chose a pair that runs elsewhere: the job goes to that pair's queue."""

    def __init__(self, endpoint: str | None, decision, failovers: tuple[Failover, ...]) -> None:
        super().__init__(endpoint)
        self.endpoint, self.decision, self.failovers = endpoint, decision, failovers


class SharedRouter:
    """The router as one job's answer() sees it. The router and its store are shared by every
    request thread, so each decision and record is made under the worker's lock, with this job's
    budget and strategy set for the call and the server's restored after it.

    `first` is the decision the job was dispatched on; answer() gets it instead of deciding
    again. A later decision (a failover) for a pair that runs on another queue than `lane`
    (None: the local model, else an endpoint's name) raises Move rather than running there."""

    def __init__(self, worker: "Worker", budget_s: float, strategy: str, lane: str | None,
                 first=None, failovers: tuple[Failover, ...] = ()) -> None:
        self.worker, self.budget_s, self.strategy, self.lane, self.first = worker, budget_s, strategy, lane, first
        self.failovers = list(failovers)  # every queue's so far, carried along when the job moves

    @property
    def endpoints(self):
        return self.worker.router.endpoints

    def decide(self, messages, *, max_tokens: int, forced_pair: str | None = None):
        if self.first is not None:
            decision, self.first = self.first, None
            return decision
        decision = self.worker.decide(messages, max_tokens, forced_pair, self.budget_s, self.strategy)
        lane = self.worker.pool.registry.pair(decision.chosen).endpoint
        if forced_pair is None and lane != self.lane:
            raise Move(lane, decision if lane is not None else None, tuple(self.failovers))
        return decision

    def endpoint_failed(self, exc: EndpointError, pair: str | None = None) -> None:
        with self.worker.lock:
            self.worker.router.endpoint_failed(exc, pair)
        if exc.endpoint_fault and pair is not None:  # what answer() lists, should the job move
            self.failovers.append(Failover(pair, exc.endpoint, exc.message))

    def record(self, decision, generation, messages) -> None:
        with self.worker.lock:
            self.worker.router.record(decision, generation, messages)


class Worker:
    """Routes each job once, then runs it on its pair's queue: one thread for the local model,
    `max_concurrency` threads per endpoint. The router and its store are shared: every decision
    and record is made under `lock`."""

    def __init__(self, router, pool) -> None:
        self.router, self.pool = router, pool
        self.lock = threading.RLock()
        self.dispatcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qroute-route")
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qroute-answer")  # the local model
        self.remote: dict[str, ThreadPoolExecutor] = {}  # one per endpoint, made on first use
        self.budget_s = router.budget_s  # the server's defaults, restored after every decision
        self.strategy = router.strategy_text
        self.closing = threading.Event()
        self.pending = 0  # requests waiting for or running on a model
        self._lock = threading.Lock()

    def submit(self, job: Job) -> Future:
        """Route `job` and queue it; the future ends with its Ran (None: its client left)."""
        outer: Future = Future()
        outer.set_running_or_notify_cancel()
        with self._lock:
            self.pending += 1
        outer.add_done_callback(self._done)
        self.dispatcher.submit(self._dispatch, job, outer)
        return outer

    def _done(self, future: Future) -> None:
        with self._lock:
            self.pending -= 1

    def decide(self, messages, max_tokens: int, forced_pair: str | None, budget_s: float, strategy: str):
        """The router's decision with this budget and strategy, under the lock."""
        with self.lock:
            router = self.router
            router.budget_s = max(budget_s, 1e-3)  # a pinned pair that waited long still runs
            try:
                router.set_strategy(strategy)
                return router.decide(messages, max_tokens=max_tokens, forced_pair=forced_pair)
            finally:
                router.budget_s = self.budget_s
                router.set_strategy(self.strategy)

    def _dispatch(self, job: Job, outer: Future) -> None:
        """Decide where `job` runs: a pinned pair's place, else the router's choice."""
        try:
            if job.stop.is_set() or self.closing.is_set():
                return outer.set_result(None)
            if job.pair is not None:
                return self._send(job, outer, self.pool.registry.pair(job.pair).endpoint, None, ())
            left = self._left(job)
            decision = self.decide(job.messages, job.config.max_tokens, None, left, job.strategy or self.strategy)
            endpoint = self.pool.registry.pair(decision.chosen).endpoint
            # A local pair is routed again when its turn comes, on what the queue left of the budget.
            self._send(job, outer, endpoint, decision if endpoint is not None else None, ())
        except BaseException as exc:  # noqa: BLE001  (the request's error, not the dispatcher's)
            outer.set_exception(exc)

    def _send(self, job: Job, outer: Future, endpoint: str | None, first, failovers: tuple[Failover, ...]) -> None:
        if endpoint is None:
            executor = self.executor
        else:
            with self._lock:
                if endpoint not in self.remote:
                    slots = self.pool.registry.endpoints[endpoint].max_concurrency
                    self.remote[endpoint] = ThreadPoolExecutor(max_workers=slots,
                                                               thread_name_prefix=f"qroute-{endpoint}")
                executor = self.remote[endpoint]
        executor.submit(self._attempt, job, outer, endpoint, first, failovers)

    def _attempt(self, job: Job, outer: Future, lane: str | None, first, failovers: tuple[Failover, ...]) -> None:
        try:
            try:
                ran = self._run(job, lane, first, failovers)
            except Move as move:  # a failover (or the wait) chose a pair on another queue
                return self._send(job, outer, move.endpoint, move.decision, move.failovers)
        except BaseException as exc:  # noqa: BLE001  (the request's error, not this thread's)
            return outer.set_exception(exc)
        outer.set_result(ran)

    def _left(self, job: Job) -> float:
        """What the queue left of the job's budget (BudgetSpent when nothing, unless pinned)."""
        queue_s = time.perf_counter() - job.arrived
        left = job.budget_s - queue_s
        if left <= 0 and (job.pair is None or job.hard_budget):
            raise BudgetSpent(f"The latency budget ({job.budget_s:g} s) ran out while the request waited "
                              f"{queue_s:.2f} s for the model.")
        return left

    def warm_up(self) -> None:
        try:
            with self.lock:
                self.router.decide([Message("user", "Hello")], max_tokens=1)
        except QrouteError as exc:  # e.g. no pair installed: every request will say so
            log.warning("%s %s", exc.message, exc.hint or "")

    def close(self) -> None:
        """Stop answers in progress, wait for every queue, then close the router (its store)."""
        self.closing.set()
        self.dispatcher.shutdown(wait=True)
        for executor in list(self.remote.values()):  # a remote job may still move to the local queue
            executor.shutdown(wait=True)
        self.executor.shutdown(wait=True)
        with self.lock:
            self.router.close()

    def _run(self, job: Job, lane: str | None = None, first=None, failovers: tuple[Failover, ...] = ()) -> Ran | None:
        """Answer `job` on this queue (None: its client left before it began)."""
        started = time.perf_counter()
        queue_s = started - job.arrived
        if job.stop.is_set() or self.closing.is_set():
            return None
        left = self._left(job)
        config = replace(job.config, deadline_s=left if job.hard_budget else None)

        def on_text(piece: str) -> None:
            if job.stop.is_set() or self.closing.is_set():
                raise ClientGone()
            if job.on_text is not None:
                job.on_text(piece)

        def before_run(decision, pair, cfg):
            if job.on_start is not None:
                job.on_start(pair)

        router = SharedRouter(self, left, job.strategy or self.strategy, lane, first, failovers)
        try:
            # A response sent whole has shown its client nothing yet: a pair that fails mid-answer
            # may be replaced from the start.
            result = answer(router, self.pool, job.messages, config, on_text,
                            forced_pair=job.pair, before_run=before_run, restart=job.on_text is None)
        except ClientGone:  # raised outside the token loop (the engine catches it inside)
            return None
        if result.generation is None:
            return None
        if failovers:  # pairs that failed on the queue this job came from
            result = replace(result, failovers=failovers + result.failovers)
        return Ran(result, queue_s, time.perf_counter() - job.arrived, job.budget_s)


@dataclass(frozen=True)
class Settings:
    """What the server was started with."""

    api_key: str | None = None
    max_body_bytes: int = MAX_BODY_BYTES
    max_tokens: int = 256  # when a request gives none


def create_app(router, pool, *, settings: Settings | None = None, metrics: Metrics | None = None) -> Starlette:
    """The ASGI app: `router` decides and learns (under the worker's lock), `pool` holds the
    loaded models (used by the local thread only); the app closes the router when it shuts down."""
    settings = settings or Settings()
    metrics = metrics or Metrics()
    registry = pool.registry
    if registry.endpoints:
        _ = router.endpoints  # made here, not lazily in several threads at once (/health reads it)
        for name in registry.endpoints:  # their clients too; one without its key fails per request
            try:
                router.endpoints.client(name)
            except QrouteError:
                pass
    worker = Worker(router, pool)
    created = api.now()

    # -- request parsing ------------------------------------------------------------

    async def read_json(request: Request) -> Any:
        size = 0
        chunks = []
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise ApiError(413, f"The request body is larger than {settings.max_body_bytes} bytes.",
                               code="request_too_large")
            chunks.append(chunk)
        try:
            return json.loads(b"".join(chunks))
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}", code="invalid_json") from None

    def make_job(request: Request, body: Any, endpoint: str, schema) -> tuple[Job, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        try:
            req = schema.model_validate(body)
        except ValidationError as exc:
            raise ApiError(400, **_unpack(api.validation_error(exc)))
        try:
            route = api.parse_model(req.model)
        except UsageError as exc:
            raise ApiError(404, exc.message + " " + exc.hint, param="model", code="model_not_found")
        opts = req.qroute or api.QrouteOptions()
        pair = opts.pair or route.pair
        if pair is not None:
            param = "qroute.pair" if opts.pair else "model"
            try:
                registry.pair(pair)
            except UsageError as exc:
                raise _qroute_error(exc, param, 400 if opts.pair else 404)
            if pair not in {p.name for p in installed_pairs(registry)}:
                raise ApiError(400, f"Pair '{pair}' is not installed on this server.", param=param,
                               code="model_not_installed")
        strategy = opts.strategy or route.strategy
        if strategy is not None:
            try:
                policy.parse_strategy(strategy, list(registry.pairs))
            except UsageError as exc:
                raise _qroute_error(exc, "qroute.strategy")
        header = request.headers.get("x-qroute-budget")
        budget_text, param = ((opts.budget, "qroute.budget") if opts.budget is not None
                              else (header, "X-QRoute-Budget") if header is not None
                              else (route.budget, "model") if route.budget is not None else (None, None))
        try:
            budget_s = worker.budget_s if budget_text is None else parse_budget(str(budget_text))
        except UsageError as exc:
            raise _qroute_error(exc, param)
        config = GenerationConfig(
            max_tokens=req.token_cap() or settings.max_tokens, temperature=req.temperature or 0.0,
            seed=req.seed, stop=req.stops(),
        )
        job = Job(endpoint, req.to_messages(), config, strategy, budget_s, pair, opts.hard_budget)
        return job, req

    # -- running a job ----------------------------------------------------------------

    def count(job: Job, future: Future) -> None:
        """Metrics for a finished job (called in the thread that ended it)."""
        metrics.queued.dec()
        exc = future.exception()
        ran = None if exc is not None else future.result()
        if isinstance(exc, EndpointError) and exc.endpoint:
            metrics.upstream_failed(exc.endpoint, exc.kind)
        if ran is None:
            metrics.requests.labels(job.endpoint, "none", "error" if exc else "interrupted").inc()
            return
        for f in ran.result.failovers:
            metrics.upstream_failed(f.endpoint, "failover")
        if ran.result.pair.endpoint:
            metrics.upstream_answered(ran.result.pair.endpoint, ran.result.pair.name)
        s = ran.result.generation.stats
        routed = job.pair is None
        metrics.answered(job.endpoint, ran.result.pair.name, ran.result.outcome, wall_s=ran.wall_s,
                         queue_s=ran.queue_s, drafted=s.drafted, accepted=s.accepted, tokens=s.output_tokens,
                         missed_budget=routed and ran.wall_s > ran.budget_s)

    def submit(job: Job) -> Future:
        metrics.queued.inc()
        future = worker.submit(job)
        future.add_done_callback(lambda f: count(job, f))
        return future

    async def wait(request: Request, job: Job, awaitable) -> Any:
        """Await `awaitable`, stopping `job` if the client disconnects meanwhile."""
        task = asyncio.ensure_future(awaitable)
        while True:
            done, _ = await asyncio.wait({task}, timeout=POLL_S)
            if done:
                return task.result()
            if not job.stop.is_set() and await request.is_disconnected():
                job.stop.set()

    def failure(exc: BaseException) -> ApiError:
        if isinstance(exc, ApiError):
            return exc
        if isinstance(exc, BudgetSpent):
            return ApiError(503, str(exc) + " Retry, give a larger budget, or pin a pair (qroute/pair/NAME).",
                            type_="server_error", code="budget_exhausted")
        if isinstance(exc, PromptTooLongError):
            return ApiError(400, exc.message + " " + exc.hint, param="messages", code="context_length_exceeded")
        if isinstance(exc, UsageError):
            return _qroute_error(exc)
        if isinstance(exc, EndpointError):  # a pinned pair's endpoint, or every endpoint, failed
            return ApiError(502 if exc.endpoint_fault else 400, exc.message + (f" {exc.hint}" if exc.hint else ""),
                            type_="server_error" if exc.endpoint_fault else "invalid_request_error",
                            code="upstream_failed")
        if isinstance(exc, QrouteError):
            return _qroute_error(exc, status=500)
        log.error("answer failed", exc_info=exc)
        return ApiError(500, f"Internal error: {type(exc).__name__}: {exc}", type_="server_error")

    def ran_or_fail(ran: Ran | None) -> Ran:
        if ran is None:
            raise ApiError(499, "The client closed the request.", code="client_closed")
        return ran

    def extra(job: Job, ran: Ran, explain: bool) -> dict[str, Any]:
        return api.decision_json(ran.result, ran.queue_s, ran.wall_s, ran.budget_s, explain)

    async def completion(request: Request, endpoint: str, schema) -> Response:
        try:
            job, req = make_job(request, await read_json(request), endpoint, schema)
        except ApiError as exc:
            metrics.refused(endpoint)
            return exc.response()
        explain = bool(req.qroute and req.qroute.explain)
        rid = api.new_id("chatcmpl" if endpoint == "chat" else "cmpl")
        if req.stream:
            return await stream(request, job, req, rid, explain)
        try:
            ran = ran_or_fail(await wait(request, job, asyncio.wrap_future(submit(job))))
        except BaseException as exc:  # noqa: BLE001  (ClientGone included: never out of the loop)
            if isinstance(exc, asyncio.CancelledError):
                job.stop.set()
                raise
            return failure(exc).response()
        build = api.chat_response if endpoint == "chat" else api.completion_response
        return JSONResponse(build(rid, ran.result, extra(job, ran, explain)))

    async def stream(request: Request, job: Job, req, rid: str, explain: bool) -> Response:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()

        def put(kind: str, value: Any) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (kind, value))

        job.on_start = lambda pair: put("start", pair)
        job.on_text = lambda text: put("text", text)
        future = submit(job)
        future.add_done_callback(lambda f: put("done", f))
        kind, value = await wait(request, job, events.get())
        if kind == "done":  # ended before generation began: an error (or the client left)
            try:
                ran_or_fail(value.result())
            except BaseException as exc:  # noqa: BLE001
                return failure(exc).response()
        pair: Pair = value
        chat = job.endpoint == "chat"

        def chunk(text: str | None, finish: str | None = None, **more) -> str:
            if chat:
                delta = {} if text is None else {"content": text}
                body = api.chat_chunk(rid, pair.name, delta, finish, **more)
            else:
                body = api.completion_chunk(rid, pair.name, text or "", finish, **more)
            return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

        async def events_out():
            try:
                if chat:
                    yield f"data: {json.dumps(api.chat_chunk(rid, pair.name, {'role': 'assistant', 'content': ''}))}\n\n"
                while True:
                    kind, value = await events.get()
                    if kind == "text":
                        yield chunk(value)
                        continue
                    if kind != "done":
                        continue
                    try:
                        ran = ran_or_fail(value.result())
                    except BaseException as exc:  # noqa: BLE001
                        yield f"data: {json.dumps(failure(exc).body)}\n\n"
                        break
                    gen = ran.result.generation
                    yield chunk(None, api.FINISH.get(gen.finish_reason, "stop"), qroute=extra(job, ran, explain))
                    if req.include_usage():
                        body = {"id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
                                "created": api.now(), "model": pair.name, "choices": [],
                                "usage": api.usage(ran.result)}
                        yield f"data: {json.dumps(body)}\n\n"
                    break
                yield "data: [DONE]\n\n"
            finally:  # the client left (the response was cancelled) or the answer ended
                job.stop.set()

        return StreamingResponse(events_out(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # -- endpoints --------------------------------------------------------------------

    async def chat_completions(request: Request) -> Response:
        return await completion(request, "chat", api.ChatRequest)

    async def completions(request: Request) -> Response:
        return await completion(request, "completions", api.CompletionRequest)

    async def list_models(request: Request) -> Response:
        return JSONResponse(api.model_list([p.name for p in installed_pairs(registry)], created))

    async def health(request: Request) -> Response:
        body = {"status": "ok", "pairs": len(installed_pairs(registry)), "queue": worker.pending}
        if registry.endpoints:
            health = router.endpoints.health
            body["endpoints"] = {name: ({"state": "down", "error": d.reason} if (d := health.down(name)) else
                                        {"state": "up"}) for name in registry.endpoints}
        return JSONResponse(body)

    async def metrics_page(request: Request) -> Response:
        return Response(metrics.render(), media_type=metrics.content_type)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
        return JSONResponse(api.error_body(str(exc.detail), code=code), status_code=exc.status_code)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("request failed", exc_info=exc)
        return JSONResponse(api.error_body(f"Internal error: {type(exc).__name__}", "server_error"),
                            status_code=500)

    @asynccontextmanager
    async def lifespan(app):
        # Load the profile and scorer (and calibrate what has no profile yet) before the first
        # request, so that no request's budget pays for it.
        await asyncio.wrap_future(worker.dispatcher.submit(worker.warm_up))
        yield
        await asyncio.to_thread(worker.close)

    app = Starlette(
        routes=[
            Endpoint("/v1/chat/completions", chat_completions, methods=["POST"]),
            Endpoint("/v1/completions", completions, methods=["POST"]),
            Endpoint("/v1/models", list_models, methods=["GET"]),
            Endpoint("/health", health, methods=["GET"]),
            Endpoint("/metrics", metrics_page, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error, Exception: server_error},
        lifespan=lifespan,
    )
    app.state.worker, app.state.metrics = worker, metrics
    return Guard(app, settings)


def _unpack(body: dict[str, Any]) -> dict[str, Any]:
    e = body["error"]
    return {"message": e["message"], "param": e["param"], "code": e["code"]}


class Guard:
    """ASGI middleware: the API key (when one is set) and the declared body size, checked before
    any handler runs. A body without a Content-Length is counted as it is read (read_json)."""

    def __init__(self, app, settings: Settings) -> None:
        self.app, self.settings = app, settings
        self.state = app.state

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = self.settings.api_key
        if key and not hmac.compare_digest(headers.get("authorization", "").encode(), f"Bearer {key}".encode()):
            error = ApiError(401, "Missing or wrong API key: send the header 'Authorization: Bearer KEY'.",
                             code="invalid_api_key")
            return await error.response()(scope, receive, send)
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.settings.max_body_bytes:
            error = ApiError(413, f"The request body is larger than {self.settings.max_body_bytes} bytes.",
                             code="request_too_large")
            return await error.response()(scope, receive, send)
        return await self.app(scope, receive, send)
