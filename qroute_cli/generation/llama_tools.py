"""llama.cpp's own tools: where the built binaries are, and a llama-server process manager.

`scripts/build_llama_tools.sh` compiles llama-server, llama-speculative-simple and llama-bench
from the llama.cpp that the llama-cpp-python sdist vendors (same version, same build flags as
the wheel) into `$XDG_CACHE_HOME/qroute/bin/<key>/` (`~/.cache/qroute/bin/<key>/`), with a
`build-info.txt` naming the version and flags. `QROUTE_LLAMA_BIN_DIR` points at another folder.

The process invariant `LlamaServer` keeps: from `start()` until `stop()` returns it owns exactly
one child process, and `stop()` always reaps it (SIGTERM, a wait, SIGKILL, a wait), so no
zombie is left. The `with` block calls `stop()` whatever happens inside it; on Linux the child
also gets SIGTERM from the kernel if the Python process dies without stopping it (the parent
death signal), and servers still running at interpreter exit are stopped by an atexit hook.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from qroute_cli.errors import QrouteError

TOOLS = ("llama-server", "llama-speculative-simple", "llama-bench")
BUILD_HINT = "build them with: bash scripts/build_llama_tools.sh (minutes, once; cached)"


class LlamaToolError(QrouteError):
    """llama.cpp's tools are missing, or llama-server did not start."""

    exit_code = 3


def bin_dir() -> Path | None:
    """The folder holding the built tools: QROUTE_LLAMA_BIN_DIR, else the newest complete build
    for the installed llama-cpp-python in the cache; None when there is none."""
    override = os.environ.get("QROUTE_LLAMA_BIN_DIR")
    if override:
        return Path(override).expanduser()
    root = _cache_root() / "bin"
    version = _llama_cpp_version()
    builds = [
        path for path in root.glob("*/")
        if all((path / tool).is_file() for tool in TOOLS) and _built_version(path) in (version, None)
    ]
    return max(builds, key=lambda p: p.stat().st_mtime) if builds else None


def find_tool(name: str) -> Path:
    """The path of one tool (e.g. 'llama-server'), or a LlamaToolError saying how to build it."""
    folder = bin_dir()
    if folder is None:
        raise LlamaToolError(f"llama.cpp's {name} is not built", BUILD_HINT)
    path = folder / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        where = "QROUTE_LLAMA_BIN_DIR" if os.environ.get("QROUTE_LLAMA_BIN_DIR") else "the cache"
        raise LlamaToolError(f"{name} is not in {folder} ({where})", BUILD_HINT)
    return path


def build_info(folder: Path) -> dict[str, str]:
    """The `key: value` lines of a build's build-info.txt ({} when it has none)."""
    try:
        lines = (folder / "build-info.txt").read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines) if v}


def _cache_root() -> Path:
    # The same folder the build script writes to (it honours XDG_CACHE_HOME, as the wheel cache
    # does), not platformdirs' choice, which differs on macOS.
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qroute"


def _llama_cpp_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return None


def _built_version(folder: Path) -> str | None:
    return build_info(folder).get("llama-cpp-python", "").split(" ")[0] or None


@dataclass(frozen=True)
class Speculation:
    """How llama-server speculates: a draft model (`-md`), n-gram types (`--spec-type`, comma-
    separated: 'ngram-simple', 'ngram-mod', 'ngram-cache', ...), or both; draft lengths when not
    the defaults. A draft model is used as 'draft-simple' unless spec_type names a draft-* type:
    this llama-server infers a type only from special draft files (MTP, EAGLE-3, DFlash) and
    otherwise loads a plain -md model without drafting from it."""

    draft_model: Path | None = None
    spec_type: str | None = None
    n_max: int | None = None
    n_min: int | None = None

    def args(self) -> list[str]:
        args: list[str] = []
        types = [t for t in (self.spec_type or "").split(",") if t]
        if self.draft_model is not None:
            args += ["-md", str(self.draft_model)]
            if not any(t.startswith("draft-") for t in types):
                types.append("draft-simple")
        if types:
            args += ["--spec-type", ",".join(types)]
        if self.n_max is not None:
            args += ["--spec-draft-n-max", str(self.n_max)]
        if self.n_min is not None:
            args += ["--spec-draft-n-min", str(self.n_min)]
        return args


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int, timeout_s: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


# Started and not yet stopped: held here (not weakly) so that a server its owner dropped
# without stopping is still stopped at exit.
_running: set[LlamaServer] = set()


@atexit.register
def _stop_all() -> None:
    for server in list(_running):
        server.stop()


class LlamaServer:
    """One llama-server process on 127.0.0.1, ready when `start()` returns; a context manager.

        with LlamaServer(model, threads=2, speculation=Speculation(draft_model=draft)) as server:
            httpx.post(server.url + "/v1/chat/completions", json=...)
    """

    def __init__(
        self,
        model: Path,
        *,
        speculation: Speculation | None = None,
        threads: int = 1,
        ctx: int = 2048,
        slots: int = 1,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
        startup_timeout_s: float = 120.0,
    ) -> None:
        self.model = Path(model)
        self.speculation = speculation or Speculation()
        self.threads = threads
        self.ctx = ctx
        self.slots = slots
        self.extra_args = list(extra_args)
        self.host = host
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._log_file = None

    # -- lifecycle ---------------------------------------------------------------------------

    def command(self, port: int) -> list[str]:
        """The command line the server is started with."""
        return [
            str(find_tool("llama-server")), "-m", str(self.model), *self.speculation.args(),
            "--host", self.host, "--port", str(port), "-t", str(self.threads), "-c", str(self.ctx),
            "-np", str(self.slots), *self.extra_args,
        ]

    def start(self) -> LlamaServer:
        """Start the server and wait until /health says it is ready; LlamaToolError (with the end
        of its log) when it exits or is not ready within startup_timeout_s."""
        if self.process is not None:
            raise RuntimeError("this LlamaServer is already started")
        if not self.model.is_file():
            raise LlamaToolError(f"model file not found: {self.model}", "qroute models pull NAME fetches a built-in model")
        self._log_file = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)
        # Another process can take the free port between our check and the server's bind; the
        # server then exits at once, and a new port is tried.
        for _ in range(3):
            self.port = free_port(self.host)
            self.process = subprocess.Popen(
                self.command(self.port), stdin=subprocess.DEVNULL, stdout=self._log_file,
                stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal(),
            )
            _running.add(self)
            try:
                self._wait_ready()
                return self
            except _BindFailed:
                self._reap()
            except BaseException:
                self.stop()
                raise
        self.stop()
        raise LlamaToolError(f"llama-server could not bind a port on {self.host}", "see the log: " + self.log_tail())

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after timeout_s) and reap it; idempotent."""
        self._reap(timeout_s)
        _running.discard(self)
        if self._log_file is not None:
            self._log_file.close()
            Path(self._log_file.name).unlink(missing_ok=True)
            self._log_file = None

    def __enter__(self) -> LlamaServer:
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- state ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """http://HOST:PORT, without a trailing slash."""
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of the server's output (for error messages)."""
        if self._log_file is None:
            return ""
        try:
            text = Path(self._log_file.name).read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def get_json(self, path: str, timeout_s: float = 10.0) -> dict:
        """GET a JSON endpoint of the server (/health, /props, /v1/models)."""
        with urllib.request.urlopen(self.url + path, timeout=timeout_s) as response:
            return json.loads(response.read())

    def post_json(self, path: str, body: dict, timeout_s: float = 300.0) -> dict:
        """POST a JSON body to the server and return its JSON answer."""
        request = urllib.request.Request(
            self.url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return json.loads(response.read())

    # -- internals -------------------------------------------------------------------------------

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            code = self.process.poll()
            if code is not None:
                tail = self.log_tail()
                if "couldn't bind" in tail:  # llama-server's words when the port is taken
                    raise _BindFailed
                raise LlamaToolError(f"llama-server exited with code {code} before it was ready:\n{tail}",
                                     "check the model file and the options; the lines above are the server's log")
            try:
                if self.get_json("/health", timeout_s=2.0).get("status") == "ok":
                    return
            except (urllib.error.URLError, OSError, ValueError):
                pass  # not listening yet, or 503 while the model loads
            if time.monotonic() > deadline:
                raise LlamaToolError(
                    f"llama-server was not ready after {self.startup_timeout_s:.0f} s:\n{self.log_tail()}",
                    "a large model on a busy machine loads slowly: raise startup_timeout_s",
                )
            time.sleep(0.1)

    def _reap(self, timeout_s: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()


class _BindFailed(Exception):
    """The server exited because its port was taken."""


def _parent_death_signal():
    """On Linux, a function for the child (before exec) that asks the kernel to send it SIGTERM
    when its parent dies; None elsewhere. Only from the main thread: the signal follows the
    thread that started the child, and a worker thread that ends would take the server with it."""
    if sys.platform != "linux" or threading.current_thread() is not threading.main_thread():
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return lambda: prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG = 1
