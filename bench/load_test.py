"""Load test: N concurrent clients against `qroute serve` fronting two local servers, one of which
is killed mid-run.

Two servers on 127.0.0.1 answer smollm2-135m (llama.cpp's llama-server when it is built, else
`python -m llama_cpp.server`); a models.toml of this run's own declares each as an endpoint with
one pair, the first with the higher quality prior, so that qroute routes to it while it is up.
`qroute serve` (its own data dir, so nothing of the user's is touched or learned from) fronts
both. `--clients` threads send `--requests` chat completions in all (the prompts of
bench/data/budget_prompts.jsonl in turn, `qroute/auto` with `--budget`, non-streamed), and the
first server is killed (SIGKILL) once `--kill-after` of them have been answered.

Reported: throughput (answers per second of wall time), p50/p95 latency of the answers (as the
client saw them, queue included), the budget hit rate (answers within the budget, over all
requests), how many answers failed over, and that every request got an answer or a clear error
(an OpenAI-style error body with a message; anything else, e.g. a connection reset or a 500,
counts as unclear). The JSON in bench/results/load_test.json carries the provenance.

    nice -n 10 .venv/bin/python -m bench.load_test                                  # 4 clients, 120 requests
    .venv/bin/python -m bench.load_test --clients 2 --requests 12 --max-tokens 8 --out /tmp/lt.json   # a quick smoke run

`qroute serve` answers pairs on endpoints side by side (up to each endpoint's
max_concurrency) and counts the queue wait against each request's budget. Each server here
has one slot and the router sends every request to the better pair while it is up, so the
requests queue inside that server: the throughput measured is that of one slot at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx

from qroute_cli.evaluation.provenance import record
from qroute_cli.jsonl import read_jsonl
from qroute_cli.numeric import percentile

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "bench" / "data" / "budget_prompts.jsonl"
OUT = ROOT / "bench" / "results" / "load_test.json"
MODEL = "smollm2-135m"
GENERIC_ALIAS = "smollm-generic"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, what: str, timeout_s: float = 180.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{what} was not ready within {timeout_s:.0f} s")


class Backend:
    """One local server answering MODEL: llama-server (llama_tools.LlamaServer) or llama_cpp.server."""

    def __init__(self, kind: str, model_path: Path, threads: int) -> None:
        self.kind, self.model_path, self.threads = kind, model_path, threads
        self.proc: subprocess.Popen | None = None
        self.server = None
        self.url = ""

    def start(self) -> "Backend":
        if self.kind == "llama-server":
            from qroute_cli.generation.llama_tools import LlamaServer

            self.server = LlamaServer(self.model_path, threads=self.threads, ctx=2048).start()
            self.proc, self.url = self.server.process, self.server.url
            return self
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(self.model_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_threads", str(self.threads), "--n_ctx", "2048",
             "--model_alias", GENERIC_ALIAS, "--verbose", "False"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_http(self.url + "/v1/models", self.proc, "llama_cpp.server")
        return self

    @property
    def endpoint_kind(self) -> str:
        return "llama-server" if self.kind == "llama-server" else "openai"

    @property
    def model_name(self) -> str:
        return MODEL if self.kind == "llama-server" else GENERIC_ALIAS

    def kill(self) -> None:
        """SIGKILL: the machine goes away mid-answer, nothing is closed cleanly."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        elif self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def server_kind(choice: str) -> str:
    if choice != "auto":
        return choice
    from qroute_cli.generation.llama_tools import bin_dir

    folder = bin_dir()
    return "llama-server" if folder is not None and (folder / "llama-server").is_file() else "llama-cpp-python"


def write_config(path: Path, backends: dict[str, Backend], down_for: float) -> Path:
    text = 'include_builtin = false\n[defaults]\nbudget = "30s"\n'
    for i, (name, b) in enumerate(backends.items()):
        text += textwrap.dedent(f"""
            [models.smollm-{name}]
            remote = true
            quality_prior = {0.6 - 0.2 * i:.1f}

            [endpoints.{name}]
            url = "{b.url}"
            kind = "{b.endpoint_kind}"
            model = "{b.model_name}"
            connect_timeout = 2
            read_timeout = 60
            down_for = {down_for}

            [pairs."smollm@{name}"]
            verifier = "smollm-{name}"
            endpoint = "{name}"
        """)
    path.write_text(text)
    return path


@contextlib.contextmanager
def qroute_serve(config: Path, home: Path, threads: int):
    port = free_port()
    env = {**os.environ, "QROUTE_HOME": str(home)}
    env.pop("QROUTE_CONFIG", None)
    log = (home / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "qroute_cli", "--config", str(config), "serve", "--port", str(port),
                             "--threads", str(threads)], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, "qroute serve")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def one_request(http: httpx.Client, url: str, prompt: str, budget_s: float, max_tokens: int) -> dict:
    """One chat completion; what the client saw."""
    body = {"model": "qroute/auto", "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
            "temperature": 0, "qroute": {"budget": f"{budget_s}s"}}
    t0 = time.perf_counter()
    try:
        r = http.post(url + "/v1/chat/completions", json=body)
    except httpx.HTTPError as exc:
        return {"ok": False, "clear": False, "latency_s": time.perf_counter() - t0,
                "error": f"{type(exc).__name__}: {exc}"}
    latency = time.perf_counter() - t0
    try:
        data = r.json()
    except ValueError:
        data = None
    if r.status_code == 200 and isinstance(data, dict) and data.get("choices"):
        q = data.get("qroute", {})
        return {"ok": True, "latency_s": latency, "status": 200, "pair": data.get("model"),
                "tokens": data.get("usage", {}).get("completion_tokens"), "failovers": len(q.get("failovers", [])),
                "queue_s": q.get("queue_s"), "within_budget": latency <= budget_s}
    message = data.get("error", {}).get("message") if isinstance(data, dict) and isinstance(data.get("error"), dict) else None
    # A clear error: an OpenAI error body with a message, and a status that is not a bug (500).
    return {"ok": False, "clear": bool(message) and r.status_code != 500, "latency_s": latency,
            "status": r.status_code, "error": message or r.text[:200]}


def run(args) -> dict:
    prompts = [rec["prompt"] for rec in read_jsonl(PROMPTS)]
    kind = server_kind(args.server)
    from qroute_cli import paths

    model_path = paths.cache_dir() / f"{MODEL}.gguf"
    if not model_path.exists():
        raise SystemExit(f"{model_path} is missing: qroute models pull {MODEL}")
    results: list[dict] = []
    lock = threading.Lock()
    next_index = [0]
    killed_at: list[float] = []
    with tempfile.TemporaryDirectory(prefix="qroute-load-") as tmp:
        home = Path(tmp)
        backends = {"first": Backend(kind, model_path, args.server_threads),
                    "second": Backend(kind, model_path, args.server_threads)}
        try:
            for b in backends.values():
                b.start()
            config = write_config(home / "models.toml", backends, args.down_for)
            with qroute_serve(config, home, args.server_threads) as url:
                t_start = time.perf_counter()

                def client() -> None:
                    with httpx.Client(timeout=args.timeout) as http:
                        while True:
                            with lock:
                                i = next_index[0]
                                if i >= args.requests:
                                    return
                                next_index[0] += 1
                            res = one_request(http, url, prompts[i % len(prompts)], args.budget, args.max_tokens)
                            res["t_end_s"] = time.perf_counter() - t_start
                            with lock:
                                results.append(res)
                                answered = sum(r["ok"] for r in results)
                                if not killed_at and answered >= args.kill_after * args.requests:
                                    backends["first"].kill()
                                    killed_at.append(time.perf_counter() - t_start)

                threads = [threading.Thread(target=client) for _ in range(args.clients)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                wall = time.perf_counter() - t_start
                metrics = httpx.get(url + "/metrics", timeout=10).text
        finally:
            for b in backends.values():
                b.stop()
    return summarize(results, wall, killed_at[0] if killed_at else None, kind, args, metrics)


def summarize(results: list[dict], wall: float, killed_at: float | None, kind: str, args, metrics: str) -> dict:
    answers = [r for r in results if r["ok"]]
    errors = [r for r in results if not r["ok"]]
    lat = [r["latency_s"] for r in answers]
    pairs: dict[str, int] = {}
    for r in answers:
        pairs[r["pair"]] = pairs.get(r["pair"], 0) + 1
    after = [r for r in answers if killed_at is not None and r["t_end_s"] > killed_at]
    upstream = [line for line in metrics.splitlines() if line.startswith("qroute_upstream_") and not line.startswith("#")
                and "_created" not in line]
    return {
        "provenance": record(command=" ".join(["python -m bench.load_test", *sys.argv[1:]]), threads=args.server_threads),
        "setup": {"servers": kind, "model": MODEL, "clients": args.clients, "requests": args.requests,
                  "budget_s": args.budget, "max_tokens": args.max_tokens, "kill_after": args.kill_after,
                  "down_for_s": args.down_for, "server_threads": args.server_threads,
                  "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "wall_s": round(wall, 3),
        "killed_first_at_s": None if killed_at is None else round(killed_at, 3),
        "requests": len(results),
        "answered": len(answers),
        "clear_errors": sum(1 for r in errors if r["clear"]),
        "unclear_errors": sum(1 for r in errors if not r["clear"]),
        "every_request_answered_or_clear_error": len(results) == args.requests and all(r["ok"] or r["clear"] for r in results),
        "throughput_answers_per_s": round(len(answers) / wall, 3) if wall > 0 else None,
        "latency_p50_s": round(percentile(lat, 50), 3) if lat else None,
        "latency_p95_s": round(percentile(lat, 95), 3) if lat else None,
        "budget_hit_rate": round(sum(r["within_budget"] for r in answers) / len(results), 3) if results else None,
        "answers_with_failover": sum(1 for r in answers if r["failovers"]),
        "answers_per_pair": pairs,
        "answers_after_the_kill_per_pair": {p: sum(1 for r in after if r["pair"] == p) for p in pairs},
        "errors": sorted({f"{r.get('status')}: {r['error'][:160]}" for r in errors}),
        "upstream_metrics": upstream,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    parser.add_argument("--requests", type=int, default=120, help="requests in all (default 120)")
    parser.add_argument("--budget", type=float, default=30.0, help="latency budget per request in seconds, queue included (default 30)")
    parser.add_argument("--max-tokens", type=int, default=32, help="max tokens per answer (default 32)")
    parser.add_argument("--kill-after", type=float, default=1 / 3, help="kill the first server once this share of requests is answered (default 1/3)")
    parser.add_argument("--down-for", type=float, default=600.0, help="seconds a failed endpoint stays out of routing (default 600: the rest of the run)")
    parser.add_argument("--server", choices=("auto", "llama-server", "llama-cpp-python"), default="auto",
                        help="the local servers: llama.cpp's llama-server (when built) or python -m llama_cpp.server")
    parser.add_argument("--server-threads", type=int, default=1, help="threads per server (default 1)")
    parser.add_argument("--timeout", type=float, default=300.0, help="client timeout per request, seconds (default 300)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"where to write the JSON (default {OUT.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    summary = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    keys = ("requests", "answered", "clear_errors", "unclear_errors", "every_request_answered_or_clear_error",
            "throughput_answers_per_s", "latency_p50_s", "latency_p95_s", "budget_hit_rate", "answers_with_failover",
            "answers_per_pair", "answers_after_the_kill_per_pair", "killed_first_at_s", "wall_s")
    for key in keys:
        print(f"{key:40} {summary[key]}")
    for err in summary["errors"]:
        print(f"error: {err}")
    print(f"wrote {args.out}")
    return 0 if summary["every_request_answered_or_clear_error"] else 1


if __name__ == "__main__":
    sys.exit(main())
