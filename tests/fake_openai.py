"""A small OpenAI-compatible server on 127.0.0.1 for endpoint tests: real HTTP, scripted answers.

It streams an answer the way llama-server does (the last event carries `timings`, with draft_n
and draft_n_accepted when it drafted) or the way vLLM does (a usage event with OpenAI's token
counts and, as with --per-request-spec-decode-metrics, `metrics.speculative_decoding`). The
event shapes are copied from llama.cpp's tools/server/server-task.cpp (the build vendored by
llama-cpp-python 0.3.36) and vLLM's per-request metrics (vllm-project/vllm#48915). Each request
takes the next mode from `script` (then `default`): ok, status:NNN, hang:SECONDS, drop (a few
pieces, then the connection closes), garbage (an event that is not JSON), nofinish (no
finish_reason before [DONE]).

With `hold` (a threading.Event), every chat request waits for it to be set before it answers;
`wait_held(n)` waits until `n` requests are waiting at once, which shows requests in flight
together without measuring time.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeOpenAI:
    """Start with `with FakeOpenAI(...) as server:`; `server.url` is its base URL."""

    def __init__(self, *, style: str = "llama-server", model: str = "fake-model", reply: str = "one two three four five",
                 piece_delay_s: float = 0.0, prompt_ms_per_token: float = 0.5, predicted_ms_per_token: float = 4.0,
                 draft: tuple[int, int] | None = None, default: str = "ok",
                 hold: threading.Event | None = None) -> None:
        self.style, self.model, self.reply = style, model, reply
        self.piece_delay_s = piece_delay_s
        self.prompt_ms_per_token, self.predicted_ms_per_token = prompt_ms_per_token, predicted_ms_per_token
        self.draft = draft  # (drafted, accepted) to report
        self.default = default
        self.script: list[str] = []
        self.requests: list[dict] = []  # bodies of the chat requests received
        self.disconnects = 0  # answers whose client went away mid-stream
        self.hold = hold
        self.held = 0  # requests waiting for `hold` now
        self.most_held = 0  # the most that waited at once
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, body) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                if self.path == "/health":
                    self._json(200, {"status": "ok"})
                elif self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": fake.model, "object": "model"}]})
                elif self.path == "/props" and fake.style == "llama-server":
                    self._json(200, {"model_path": f"/models/{fake.model}.gguf",
                                     "default_generation_settings": {"n_ctx": 4096}})
                else:
                    self._json(404, {"error": {"message": "File Not Found", "type": "not_found_error", "code": 404}})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with fake._lock:
                    fake.requests.append(body)
                    mode = fake.script.pop(0) if fake.script else fake.default
                if fake.hold is not None:
                    fake._wait_for_release()
                if mode.startswith("status:"):
                    status = int(mode.split(":")[1])
                    return self._json(status, {"error": {"message": f"scripted failure {status}", "type": "server_error"}})
                if mode.startswith("hang:"):
                    time.sleep(float(mode.split(":")[1]))
                    self.close_connection = True
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    fake._stream(self, body, mode)
                except (BrokenPipeError, ConnectionResetError):
                    with fake._lock:
                        fake.disconnects += 1
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _wait_for_release(self) -> None:
        with self._changed:
            self.held += 1
            self.most_held = max(self.most_held, self.held)
            self._changed.notify_all()
        self.hold.wait()
        with self._changed:
            self.held -= 1
            self._changed.notify_all()

    def wait_held(self, n: int, timeout: float = 60.0) -> bool:
        """Wait until `n` requests are held at once (False if that did not happen in `timeout`)."""
        with self._changed:
            return self._changed.wait_for(lambda: self.held >= n, timeout)

    # -- answers ------------------------------------------------------------------------

    def _send(self, handler, data: str) -> None:
        raw = data.encode()
        handler.wfile.write(f"{len(raw):x}\r\n".encode() + raw + b"\r\n")
        handler.wfile.flush()

    def _event(self, handler, obj) -> None:
        self._send(handler, "data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n")

    def _chunk(self, delta: dict, finish: str | None = None) -> dict:
        return {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": int(time.time()),
                "model": self.model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def _stream(self, handler, body: dict, mode: str) -> None:
        words = self.reply.split(" ")
        limit = int(body.get("max_tokens") or len(words))
        pieces = [(" " if i else "") + w for i, w in enumerate(words[:limit])]
        finish = "length" if limit < len(words) else "stop"
        prompt_n = sum(len(m.get("content", "")) for m in body.get("messages", [])) // 4 + 10
        self._event(handler, self._chunk({"role": "assistant", "content": None}))
        if mode == "garbage":
            self._event(handler, "this is not json")
            return self._send(handler, "")
        for i, piece in enumerate(pieces):
            if self.piece_delay_s:
                time.sleep(self.piece_delay_s)
            if mode == "drop" and i == 2:
                handler.wfile.flush()
                handler.connection.shutdown(socket.SHUT_RDWR)
                return
            self._event(handler, self._chunk({"content": piece}))
        if mode == "nofinish":
            self._event(handler, "[DONE]")
            return self._send(handler, "")
        n = len(pieces)
        last = self._chunk({}, finish)
        usage = {"prompt_tokens": prompt_n, "completion_tokens": n, "total_tokens": prompt_n + n}
        if self.style == "llama-server":
            timings = {"cache_n": 0, "prompt_n": prompt_n, "prompt_ms": prompt_n * self.prompt_ms_per_token,
                       "prompt_per_token_ms": self.prompt_ms_per_token, "prompt_per_second": 1000 / self.prompt_ms_per_token,
                       "predicted_n": n, "predicted_ms": max(n - 1, 0) * self.predicted_ms_per_token,
                       "predicted_per_token_ms": self.predicted_ms_per_token,
                       "predicted_per_second": 1000 / self.predicted_ms_per_token}
            if self.draft:
                timings.update(draft_n=self.draft[0], draft_n_accepted=self.draft[1])
            self._event(handler, last)
            usage_event = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": self.model,
                           "choices": [], "usage": usage, "timings": timings}
            self._event(handler, usage_event)
        else:  # vLLM
            self._event(handler, last)
            usage_event = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "model": self.model,
                           "choices": [], "usage": usage}
            if self.draft:
                usage_event["metrics"] = {"speculative_decoding": {
                    "mean_acceptance_length": 1 + self.draft[1] / max(n, 1), "num_spec_steps": n,
                    "num_draft_tokens": self.draft[0], "num_accepted_draft_tokens": self.draft[1],
                    "draft_acceptance_rate": self.draft[1] / self.draft[0], "num_spec_tokens": 3}}
            self._event(handler, usage_event)
        self._event(handler, "[DONE]")
        self._send(handler, "")  # the last chunk of the chunked body

    # -- lifetime -----------------------------------------------------------------------

    def start(self) -> "FakeOpenAI":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "FakeOpenAI":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
