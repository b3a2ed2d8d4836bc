"""Run untrusted Python (a model's code answer plus its tests) in a separate, limited process.

`run_python(source)` writes the source into a fresh temporary folder, runs it there and
returns an `Outcome`: "passed" (the program ran to its end), "failed" (it raised, exited
early, was killed by a limit, or tried something the guard forbids), "timeout" (wall-clock
or CPU limit) or "error" (the sandbox itself could not run it: score nothing, fix the setup).
The folder is deleted afterwards, whatever the program did.

What the code runs under, outermost first:

- **A separate interpreter**: `sys.executable -I -S -B` (no site-packages, no user site, no
  PYTHON* variables, no script folder on sys.path, no .pyc written), stdin from /dev/null,
  an environment of PATH, LANG, and HOME and TMPDIR pointing into the temporary folder, which
  is also the working directory. Only the standard library can be imported.
- **Its own session**: a wall-clock timeout kills the whole process group.
- **Namespaces, where `unshare` works** (Linux with user namespaces allowed): a new user, network
  and PID namespace. There is no network at all (only a loopback that is down), the code cannot
  see or signal the machine's other processes, and when the interpreter ends the kernel kills
  everything left in its PID namespace. `isolation()` says whether this layer is on.
- **Another user, when qroute runs as root** and the interpreter is readable by `nobody`: the
  code runs as uid/gid 65534, so file permissions keep it out of root's and other users' files
  and the process limit applies (the kernel does not apply RLIMIT_NPROC to root).
- **Resource limits**, set by the child on itself before it reads the untrusted code (not in a
  `preexec_fn`: qroute's parent process runs llama.cpp threads, and Python documents that a
  `preexec_fn` can deadlock a forked child of a threaded parent): CPU seconds, address space
  (1 GiB by default), file size (8 MiB), open files, no core dumps, and no new processes or
  threads (RLIMIT_NPROC 0; not enforced for root, see above).
- **A guard inside the interpreter** (`sys.addaudithook`, installed before the untrusted code is
  compiled): no fork/exec/spawn/subprocess/os.system, no signals to other processes, no sockets
  (`socket`, `ssl` and their C modules cannot be imported), no ctypes, resource limits cannot be
  changed, no sub-interpreters, no `gc` object walks; files may be written, created, renamed or
  deleted only inside the temporary folder (at most 32 files opened for writing), and read only
  there or in the standard library (no directories opened there); paths must be str or bytes
  (a PathLike object could answer the check and the call differently, so `pathlib` file I/O is
  refused); no chdir, links, FIFOs or device nodes; `os._exit` is disabled and a `SystemExit` counts as a failure, so calling
  `exit(0)` before the tests finish does not pass.

What the guard does not stop: audit hooks are not a security boundary. Code that attacks the
interpreter itself (crafted bytecode through `marshal` or `types.CodeType`, an interpreter bug)
can get past it. Against that, only the OS layers hold: namespaces, limits and, as root, the
unprivileged user. A normal user on a machine without user namespaces runs the code as
themselves, with the guard as the only thing between a deliberate attacker and their files;
HumanEval answers from a local model are not that, and the guard stops the accidents and
plain hostile code the tests show (infinite loops, fork bombs, memory hogs, deleting or
writing outside the folder, reading HOME, connecting out).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

NOBODY = 65534
RUNNER = "qroute_sandbox.py"  # the name `ps` shows for a sandboxed program
PROGRAM = "program.py"


@dataclass(frozen=True)
class Limits:
    """What one run may use. The defaults suit HumanEval: its tests take well under a second."""

    timeout_s: float = 10.0  # wall clock; the CPU limit is the same number of seconds, rounded up
    memory_mb: int = 1024  # address space: a list of a billion ints fails, the machine does not
    file_mb: int = 8  # largest file the program may write
    max_output: int = 16_384  # bytes of stdout+stderr kept (head and tail)


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed" | "failed" | "timeout" | "error"
    reason: str  # one short line: why it did not pass ("" when it passed)
    output: str  # stdout and stderr together, truncated in the middle
    seconds: float

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass(frozen=True)
class Isolation:
    """The OS layers this machine gives the sandbox (the guard and limits are always on)."""

    namespaces: bool  # user + network + PID namespaces through `unshare`
    user: int | None  # uid the code runs as when qroute runs as root; None: qroute's own user
    broken: str = ""  # why not even a trivial program ran in any setup ("" when one did)

    def describe(self) -> str:
        if self.broken:
            return f"unavailable: {self.broken}"
        parts = ["rlimits", "audit guard"]
        parts.append("no network (net namespace)" if self.namespaces else "sockets blocked by the guard only")
        if self.user is not None:
            parts.append(f"uid {self.user}")
        return ", ".join(parts)


# The child runs this file. Everything before `exec` is trusted; the hook's state lives in
# closure cells of `_start`, which the untrusted code cannot reach once `_start` is deleted
# (the gc walks that could find them are denied). Captured builtins keep the checks working
# when the program rebinds names in `builtins`, `os` or `os.path`.
_RUNNER_SOURCE = r'''
import sys

def _start(cfg):
    import os
    import posix
    import resource

    # The standard library of this interpreter, as imports name it and resolved.
    roots = [p for p in sys.path if p and os.path.isdir(p)]
    roots += [os.path.realpath(p) for p in roots]

    cpu, mem, fsize = cfg["cpu_s"], cfg["memory_bytes"], cfg["file_bytes"]
    for limit, value in ((resource.RLIMIT_CPU, (cpu, cpu + 1)), (resource.RLIMIT_AS, (mem, mem)),
                         (resource.RLIMIT_FSIZE, (fsize, fsize)), (resource.RLIMIT_CORE, (0, 0)),
                         (resource.RLIMIT_NOFILE, (64, 64)), (resource.RLIMIT_NPROC, (0, 0))):
        try:
            resource.setrlimit(limit, value)
        except (ValueError, OSError):  # a platform without this limit, or a lower hard limit already
            pass

    cwd = posix.getcwd()
    with open(cfg["program"], encoding="utf-8") as fh:
        source = fh.read()

    _str, _bytes, _int, _type, _none = str, bytes, int, type, None
    _denied = PermissionError
    _stat = posix.stat
    enc = sys.getfilesystemencoding()
    write_flags = posix.O_WRONLY | posix.O_RDWR | posix.O_CREAT | posix.O_TRUNC | posix.O_APPEND
    inside = cwd.rstrip("/") + "/"
    readable = tuple(p.rstrip("/") + "/" for p in roots)
    devnull = "/dev/null"
    writes = [0]
    max_writes = 32
    deny = frozenset(cfg["deny_events"])
    blocked_modules = frozenset(cfg["blocked_modules"])
    # event -> (indices of its path arguments, writes?). A relative path with a dir_fd is
    # checked as relative to the folder: directory descriptors can only be opened inside it.
    path_events = {
        "os.listdir": ((0,), False), "os.scandir": ((0,), False),
        "os.listxattr": ((0,), False), "os.getxattr": ((0,), False),
        "os.remove": ((0,), True), "os.rmdir": ((0,), True), "os.rename": ((0, 1), True),
        "os.mkdir": ((0,), True), "os.chmod": ((0,), True), "os.chown": ((0,), True),
        "os.truncate": ((0,), True), "os.utime": ((0,), True), "shutil.rmtree": ((0,), True),
        "sqlite3.connect": ((0,), True),
    }

    def absolute(path):
        """The absolute, '..'-free form of a path argument, or None to refuse it."""
        t = _type(path)
        if path is _none:
            return cwd
        if t is _bytes:
            path = path.decode(enc, "surrogateescape")
        elif t is not _str:
            return _none  # a PathLike could answer differently to the hook and to the call
        if "\x00" in path:
            return _none
        if not path.startswith("/"):
            path = inside + path
        parts = []
        for part in path.split("/"):
            if part == "..":
                return _none
            if part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    def allowed(path, write, opening=False):
        if _type(path) is _int:
            return True  # an open descriptor: it was checked when it was opened
        full = absolute(path)
        if full is _none:
            return False
        if full == devnull or full == cwd or full.startswith(inside):
            return True
        if write or not full.startswith(readable):
            return False
        if not opening:
            return True
        try:
            return (_stat(full).st_mode & 0o170000) != 0o040000  # no directory descriptors there
        except OSError:
            return True  # the call itself will fail

    def hook(event, args):
        if event in deny:
            raise _denied(f"sandbox: {event} is not allowed")
        if event == "import":
            name, filename = args[0], args[1]
            if _type(name) is _str:
                for part in (name.partition(".")[0], name.rpartition(".")[2]):
                    if part in blocked_modules or part.startswith("_test"):
                        raise _denied(f"sandbox: importing {name} is not allowed")
            if _type(filename) is _str:
                base = filename.rpartition("/")[2].partition(".")[0]
                if base in blocked_modules or base.startswith("_test"):
                    raise _denied(f"sandbox: loading {filename} is not allowed")
            return
        if event == "open":
            path, mode, flags = args
            write = (_type(flags) is _int and flags & write_flags) or (_type(mode) is _str and mode.strip("rbtU") != "")
            if not allowed(path, bool(write), opening=True):
                raise _denied(f"sandbox: opening {path!r} is not allowed")
            if write and _type(path) is not _int and absolute(path) != devnull:
                writes[0] += 1
                if writes[0] > max_writes:
                    raise _denied("sandbox: too many files opened for writing")
            return
        spec = path_events.get(event)
        if spec is not _none:
            indices, write = spec
            if event == "sqlite3.connect" and args[0] in (":memory:", b":memory:", ""):
                return
            for i in indices:
                if not allowed(args[i], write):
                    raise _denied(f"sandbox: {event} on {args[i]!r} is not allowed")

    def no_exit(*args):
        raise _denied("sandbox: os._exit is not allowed")

    posix._exit = os._exit = no_exit
    sys.addaudithook(hook)
    return compile(source, cfg["program"], "exec")


_code = _start(CONFIG)
del _start, CONFIG
try:
    exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
except SystemExit as exc:
    raise RuntimeError(f"the program called exit({exc.code!r}) before its end") from None
'''

_DENY_EVENTS = (
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.startfile",
    "subprocess.Popen", "pty.spawn", "os.kill", "os.killpg", "signal.pthread_kill",
    "os.chdir", "os.chroot", "os.link", "os.symlink", "os.mkfifo", "os.mknod",
    "os.setxattr", "os.removexattr", "os.chflags", "os.lchflags",
    "resource.setrlimit", "resource.prlimit",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents",
    "cpython.PyInterpreterState_New",
    "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto", "socket.sendmsg",
    "ctypes.dlopen", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
    "sqlite3.enable_load_extension", "sqlite3.load_extension",
    "webbrowser.open",
)
_BLOCKED_MODULES = (
    "_socket", "socket", "_ssl", "ssl", "ctypes", "_ctypes", "_posixsubprocess", "subprocess",
    "multiprocessing", "_multiprocessing", "_posixshmem", "pty", "readline", "_dbm", "_gdbm",
    "_xxsubinterpreters", "_xxinterpchannels", "_lsprof",
)


def _command(namespaces: bool) -> list[str]:
    cmd = [sys.executable, "-I", "-S", "-B", RUNNER]
    if namespaces:
        # --kill-child: if unshare dies, its child does too; when the child (PID 1 of the new
        # namespace) ends, the kernel kills everything else in it.
        cmd = [shutil.which("unshare") or "unshare", "--user", "--map-root-user", "--net", "--pid",
               "--fork", "--kill-child", "--"] + cmd
    return cmd


class _Reader(threading.Thread):
    """Drains a pipe, keeping the first and last `keep` bytes, so a chatty program can neither
    fill the parent's memory nor block on a full pipe."""

    def __init__(self, fh, keep: int) -> None:
        super().__init__(daemon=True)
        self.fh, self.keep = fh, keep
        self.head, self.tail, self.total = b"", b"", 0

    def run(self) -> None:
        while chunk := self.fh.read1(65536):
            self.total += len(chunk)
            if len(self.head) < self.keep:
                take = self.keep - len(self.head)
                self.head += chunk[:take]
                chunk = chunk[take:]
            self.tail = (self.tail + chunk)[-self.keep:]

    def text(self) -> str:
        cut = self.total - len(self.head) - len(self.tail)
        marker = f"\n[... {cut} bytes cut ...]\n".encode() if cut else b""
        return (self.head + marker + self.tail).decode("utf-8", "replace")


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("[... ")]
    return lines[-1][:200] if lines else ""


def _wait_and_kill(pid: int, deadline: float) -> tuple[bool, int, object]:
    """Wait for `pid` until `deadline`, kill its whole process group, reap it: (timed out,
    wait status, resource usage). Where the OS can wait without reaping (os.waitid with
    WNOWAIT), the group is killed while the exited leader still holds its id, so the kill
    cannot reach a process that reused the number."""
    can_peek = hasattr(os, "waitid")
    pause, timed_out = 0.002, False
    while True:
        if can_peek:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                break
        else:
            reaped, status, usage = os.wait4(pid, os.WNOHANG)
            if reaped:
                _kill_group(pid)
                return False, status, usage
        now = time.monotonic()
        if now >= deadline:
            timed_out = True
            break
        time.sleep(min(pause, deadline - now))
        pause = min(pause * 2, 0.02)
    _kill_group(pid)
    _, status, usage = os.wait4(pid, 0)
    return timed_out, status, usage


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _remove_tree(path: str) -> None:
    def unlock(func, p, _exc):
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=unlock)


def _run(source: str, limits: Limits, iso: Isolation) -> Outcome:
    started = time.monotonic()
    work = os.path.realpath(tempfile.mkdtemp(prefix="qroute-sandbox-"))  # the path the child sees
    try:
        config = {
            "program": PROGRAM,
            "cpu_s": max(1, int(limits.timeout_s + 0.999)),
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "file_bytes": limits.file_mb * 1024 * 1024,
            "deny_events": list(_DENY_EVENTS),
            "blocked_modules": list(_BLOCKED_MODULES),
        }
        with open(os.path.join(work, PROGRAM), "w", encoding="utf-8") as fh:
            fh.write(source)
        with open(os.path.join(work, RUNNER), "w", encoding="utf-8") as fh:
            fh.write(f"CONFIG = {json.dumps(config)!s}\n" + _RUNNER_SOURCE)
        extra: dict = {}
        if iso.user is not None:
            for name in (work, os.path.join(work, PROGRAM), os.path.join(work, RUNNER)):
                os.chown(name, iso.user, iso.user)
            extra = {"user": iso.user, "group": iso.user, "extra_groups": []}
        env = {"PATH": os.defpath, "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        try:
            proc = subprocess.Popen(
                _command(iso.namespaces), cwd=work, env=env, stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True, **extra,
            )
        except OSError as exc:
            return Outcome("error", f"could not start the sandbox: {exc}", "", time.monotonic() - started)
        reader = _Reader(proc.stdout, limits.max_output // 2)
        reader.start()
        try:
            timed_out, status, usage = _wait_and_kill(proc.pid, started + limits.timeout_s)
        except BaseException:  # Ctrl-C: the child is in its own session and did not get it
            _kill_group(proc.pid)
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        reader.join(timeout=2.0)
        proc.stdout.close()
        seconds = time.monotonic() - started
        output = reader.text()
        cpu = usage.ru_utime + usage.ru_stime
        return _classify(proc.returncode, timed_out, cpu, config["cpu_s"], limits, output, seconds)
    finally:
        _remove_tree(work)


def _classify(rc: int, timed_out: bool, cpu: float, cpu_limit: int, limits: Limits, output: str, seconds: float) -> Outcome:
    if timed_out:
        return Outcome("timeout", f"ran past the {limits.timeout_s:g} s wall-clock limit", output, seconds)
    if rc == 0:
        return Outcome("passed", "", output, seconds)
    if rc < 0:
        try:
            sig = signal.Signals(-rc).name
        except ValueError:
            sig = f"signal {-rc}"
        if sig in ("SIGXCPU", "SIGKILL") and cpu >= cpu_limit - 0.05:
            return Outcome("timeout", f"used its {cpu_limit} s of CPU time", output, seconds)
        return Outcome("failed", f"killed by {sig}", output, seconds)
    return Outcome("failed", _last_line(output) or f"exit status {rc}", output, seconds)


@functools.lru_cache(maxsize=1)
def isolation() -> Isolation:
    """The strongest setup that runs a trivial program on this machine (tried once per process)."""
    users: list[int | None] = [None]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        users.insert(0, NOBODY)
    namespaces = [True, False] if sys.platform.startswith("linux") and shutil.which("unshare") else [False]
    probe = "import math\nprint('sandbox ok', math.sqrt(4))\n"
    why = ""
    for user in users:
        for ns in namespaces:
            iso = Isolation(ns, user)
            out = _run(probe, Limits(timeout_s=10.0), iso)
            if out.passed and "sandbox ok 2.0" in out.output:
                return iso
            why = out.reason or out.status
    # Scoring every answer 0 on a machine where nothing can run would read as a result.
    return Isolation(False, None, broken=f"a trivial program did not run ({why})")


def run_python(source: str, limits: Limits = Limits()) -> Outcome:
    """Run `source` as a program in the sandbox; see the module docstring for what it may do."""
    if not hasattr(os, "killpg") or sys.platform == "win32":
        return Outcome("error", "the code sandbox needs a POSIX system (Linux or macOS)", "", 0.0)
    iso = isolation()
    if iso.broken:
        return Outcome("error", iso.broken, "", 0.0)
    return _run(source, limits, iso)
