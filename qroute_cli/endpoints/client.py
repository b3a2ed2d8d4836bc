"""HTTP to one endpoint: streamed chat completions and small JSON GETs, with one error type.

Every way a server can fail (nothing listening, no answer within the connect timeout, silence
longer than the read timeout mid-answer, an HTTP error, a connection dropped mid-stream, a body
that is not the server-sent events of OpenAI's API) becomes an EndpointError with one line that
names the endpoint and its URL, and a hint. A caller that stops reading (a deadline, a client
that went away) leaves the `with` block: the connection is closed, and llama-server and vLLM
stop generating for a client that closed its connection.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from typing import Any, Iterator

import httpx

from qroute_cli.errors import EndpointError
from qroute_cli.types import Endpoint

CHAT_PATH = "/v1/chat/completions"


class Client:
    """Keep-alive connections to one endpoint, with its API key and timeouts."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        headers = {"Accept": "text/event-stream, application/json"}
        if endpoint.api_key_env:
            key = os.environ.get(endpoint.api_key_env)
            if not key:
                err = EndpointError(
                    f"Endpoint '{endpoint.name}' needs an API key from ${endpoint.api_key_env}, which is not set.",
                    f"Set it to the server's key (export {endpoint.api_key_env}=...), or remove api_key_env "
                    "from the endpoint in models.toml.", endpoint=endpoint.name, kind="config")
                err.exit_code = 2  # a setting the user fixes, not a failing server
                raise err
            headers["Authorization"] = f"Bearer {key}"
        self._http = httpx.Client(base_url=endpoint.url, headers=headers, timeout=self.timeout())

    def timeout(self, read_s: float | None = None) -> httpx.Timeout:
        e = self.endpoint
        return httpx.Timeout(read_s or e.read_timeout_s, connect=e.connect_timeout_s)

    @contextmanager
    def stream_chat(self, body: dict[str, Any], read_timeout_s: float | None = None) -> Iterator[Iterator[dict]]:
        """POST a streamed chat completion; yields an iterator over its parsed events."""
        with self._errors():
            with self._http.stream("POST", CHAT_PATH, json=body, timeout=self.timeout(read_timeout_s)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise self._status_error(resp)
                yield self._events(resp)

    def get_json(self, path: str, timeout_s: float | None = None) -> tuple[int, Any]:
        """GET `path`: (status, parsed JSON or None when the body is not JSON)."""
        with self._errors():
            resp = self._http.get(path, timeout=self.timeout(timeout_s) if timeout_s else None)
            try:
                return resp.status_code, resp.json()
            except ValueError:
                return resp.status_code, None

    def close(self) -> None:
        self._http.close()

    # -- errors -----------------------------------------------------------------------

    def _error(self, what: str, hint: str, kind: str, status: int | None = None) -> EndpointError:
        e = self.endpoint
        return EndpointError(f"Endpoint '{e.name}' ({e.url}) {what}", hint, endpoint=e.name, kind=kind, status=status)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        e = self.endpoint
        try:
            yield
        except httpx.ConnectTimeout:
            raise self._error(f"did not accept a connection within {e.connect_timeout_s:g} s.",
                              "Check that the machine is up and reachable; connect_timeout sets the wait.",
                              "timeout") from None
        except httpx.ConnectError as exc:
            raise self._error(f"refused the connection ({_reason(exc)}).",
                              "Check that the server runs and listens on that address and port.", "refused") from None
        except (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout):
            raise self._error(f"sent nothing for {e.read_timeout_s:g} s.",
                              "The server may be overloaded or stuck; read_timeout sets the wait.", "timeout") from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            raise self._error(f"dropped the connection mid-answer ({_reason(exc)}).",
                              "The server may have stopped or crashed; check its log.", "dropped") from None
        except httpx.HTTPError as exc:
            raise self._error(f"failed: {type(exc).__name__}: {_reason(exc)}.", "Check the endpoint's url.",
                              "http") from None

    def _status_error(self, resp: httpx.Response) -> EndpointError:
        message = _error_message(resp)
        status = resp.status_code
        hint = {
            401: "Check the API key (api_key_env of the endpoint in models.toml).",
            403: "Check the API key (api_key_env of the endpoint in models.toml).",
            404: "Check the model name the pair sends (model in models.toml) and the endpoint's url (without /v1).",
        }.get(status, "See the server's log." if status >= 500 else "The server did not accept this request.")
        return self._error(f"answered HTTP {status}: {message}", hint, "http", status)

    def _events(self, resp: httpx.Response) -> Iterator[dict]:
        """Parsed `data:` events up to [DONE]; an error event or a line that is not JSON fails."""
        for line in resp.iter_lines():
            if not line.startswith("data:"):
                continue  # blank separators, comments (": ping"), event names
            data = line[5:].strip()
            if data == "[DONE]":
                return
            try:
                event = json.loads(data)
            except ValueError:
                raise self._error(f"sent an event that is not JSON: {data[:80]!r}.",
                                  "Is it an OpenAI-compatible server? Check kind and url in models.toml.",
                                  "bad_response") from None
            if not isinstance(event, dict):
                raise self._error(f"sent an event that is not a JSON object: {data[:80]!r}.",
                                  "Is it an OpenAI-compatible server?", "bad_response")
            if "error" in event:
                raise self._error(f"reported an error mid-answer: {_message_of(event['error'])}",
                                  "See the server's log.", "http")
            yield event


def _reason(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1][:160] if text else type(exc).__name__


def _message_of(error: Any) -> str:
    if isinstance(error, dict):
        return str(error.get("message") or error)[:200]
    return str(error)[:200]


def _error_message(resp: httpx.Response) -> str:
    """The message of an error body (OpenAI's {"error": {"message"}}, or FastAPI's {"detail"}),
    else the start of the body."""
    try:
        body = resp.json()
    except ValueError:
        return (resp.text.strip().splitlines() or [resp.reason_phrase])[0][:200]
    if isinstance(body, dict):
        for key in ("error", "detail", "message"):
            if key in body:
                return _message_of(body[key])
    return json.dumps(body)[:200]
