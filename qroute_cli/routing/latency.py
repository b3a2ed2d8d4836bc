"""Calibrated profile of this machine -> predicted latency of a pair on a prompt.

predicted latency = prefill(prompt tokens) + expected output tokens x time per output token.
A plain pair's time per token is its measured decode cost. A speculative pair's follows the
rule the engine drafts by (qroute_cli/speculation.py), on the pair's cost curve from this
profile: the verifier's batch of k + 1 tokens, the drafter's cost per token and its catch-up,
at the expected acceptance, for the best draft length k in 0..tuning.DRAFTING.max_len (the
batches calibration measured, and the bound the engine and --draft-max have too). k = 0 is
plain decoding, so the model never predicts a drafter slower than plain, and the engine,
handed the same curve, drafts as predicted.

Prompt tokens are estimated from text (models are not loaded just to route): a fixed chat-
template overhead plus characters / 3.5 until the run log has learned, per verifier, a line
tokens = a + b x characters and the prefix the KV cache usually reuses (online.py).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import platform
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from qroute_cli import paths
from qroute_cli.config import Registry
from qroute_cli.speculation import CostCurve, best_draft_len, seconds_per_token
from qroute_cli.tuning import DRAFTING
from qroute_cli.types import DRAFT_COPY, DRAFTER_NGRAM, DRAFTER_NONE, Pair, draft_copy

PROFILE_VERSION = 1
DEFAULT_TOKENS_PER_CHAR = 1 / 3.5  # English prose and code average ~3.5 characters per token
# Chat-template tokens around a single user turn, default system prompt included: 26 for the
# built-in Qwen and SmolLM chat models (fitted on the predictor's training prompts: tokens =
# 26 + chars / 3.7), none for a completion-format model; a few runs teach each verifier's own.
TEMPLATE_TOKENS = 26.0
# Acceptance before anything is known, per drafter kind (the reasons are in tuning.DRAFTING).
PRIOR_ACCEPTANCE = {"model": DRAFTING.prior_model, DRAFTER_NGRAM: DRAFTING.prior_ngram}


@dataclass(frozen=True)
class Machine:
    """What a profile is valid for: the CPU, the thread count, GPU offload, the llama.cpp build."""

    cpu: str
    threads: int
    llama_cpp: str
    gpu_layers: int = 0
    draft_gpu_layers: int | None = None  # a model drafter's layers; None: as gpu_layers
    gpu: str = ""  # the GPU's model where layers are offloaded and it can be named, else ""

    @property
    def key(self) -> str:
        gpu = f" | {self.gpu_layers} GPU layers" if self.gpu_layers else ""
        if self.draft_gpu_layers is not None:
            gpu += f" | drafters {self.draft_gpu_layers} GPU layers"
        if self.gpu:
            gpu += f" on {self.gpu}"
        return f"{self.cpu} | {self.threads} threads{gpu} | llama-cpp-python {self.llama_cpp}"


@functools.cache
def _cpuinfo(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """/proc/cpuinfo's fields (Linux), keys lower-cased, each at its first occurrence and in
    the order they first occur; {} where there is no such file."""
    fields: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, colon, value = line.partition(":")
                if colon:
                    fields.setdefault(key.strip().lower(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform knows."""
    for key, value in _cpuinfo().items():
        if key.startswith(("model name", "hardware", "cpu model")):
            return value
    return platform.processor() or platform.machine() or "unknown"


@functools.cache
def gpu_model(driver: Path = Path("/proc/driver/nvidia/gpus")) -> str:
    """The NVIDIA GPUs' model names from the driver's /proc files (Linux), e.g. 'NVIDIA H200' or
    '2x NVIDIA A100-SXM4-80GB'; "" where none can be named (no driver, macOS: there the GPU
    comes with the chip that cpu_model names)."""
    names: list[str] = []
    for info in sorted(driver.glob("*/information")):
        try:
            with open(info, encoding="utf-8", errors="replace") as fh:
                names += [line.split(":", 1)[1].strip() for line in fh if line.startswith("Model:")]
        except OSError:
            continue
    counts = Counter(n for n in names if n)
    return ", ".join(name if n == 1 else f"{n}x {name}" for name, n in sorted(counts.items()))


def cpu_detail(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """What tells apart CPUs behind one model name: x86 family, model and stepping and the
    cache size from /proc/cpuinfo, e.g. 'family 25 model 1 stepping 1, 512 KB cache'; ""
    where they are not listed. A virtual machine may name its CPU only 'AMD EPYC', and two
    such hosts in qroute's own bench runs decoded the same model 1.6x apart."""
    fields = _cpuinfo(cpuinfo)
    parts = [f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping") if fields.get(k)]
    text = " ".join(p.removeprefix("cpu ") for p in parts)
    if fields.get("cache size"):
        text += (", " if text else "") + f"{fields['cache size']} cache"
    return text


def llama_cpp_build() -> str:
    """llama-cpp-python's version from package metadata: no need to load the native library."""
    version = installed_version("llama_cpp_python")
    if version is not None:
        return version
    from importlib import metadata  # here: it imports email, zipfile and csv, which routing never needs

    try:
        return metadata.version("llama-cpp-python")
    except metadata.PackageNotFoundError:
        return "none"


def installed_version(name: str) -> str | None:
    """What importlib.metadata.version(name) answers where the first sys.path folder with metadata
    for `name` (normalized: lower case, '_' for runs of '-', '_' and '.') holds exactly one
    NAME-VERSION.dist-info, read without importing importlib.metadata; None for any other layout
    (egg-info, several, a zip on sys.path, a finder besides the standard one), where it decides."""
    import re
    import sys
    from importlib.machinery import PathFinder

    if any(hasattr(f, "find_distributions") and f is not PathFinder for f in sys.meta_path):
        return None
    for entry in sys.path:
        folder = entry or "."
        try:
            children = os.listdir(folder)
        except OSError:
            if os.path.exists(folder):
                return None  # a zip (importlib.metadata looks inside) or a folder it cannot list
            continue
        found = [c for c in children if c.lower().endswith((".dist-info", ".egg-info"))
                 and re.sub(r"[-_.]+", "_", c.lower().rpartition(".")[0].partition("-")[0]) == name]
        if not found:
            continue
        if len(found) > 1 or not found[0].lower().endswith(".dist-info"):
            return None
        try:
            with open(os.path.join(folder, found[0], "METADATA"), encoding="utf-8") as fh:
                for line in fh:
                    if not line.strip():
                        break  # the end of the headers
                    if line.startswith("Version:"):
                        return line[len("Version:"):].strip() or None
        except (OSError, UnicodeDecodeError):
            pass
        return None
    return None


def current_machine(threads: int | None = None, gpu_layers: int = 0, draft_gpu_layers: int | None = None) -> Machine:
    """This setup; drafters placed as the verifiers are (draft_gpu_layers None or equal) share its key.
    Where any layer is offloaded the GPU's model is part of it: a profile measured on one GPU is
    not used on another behind the same CPU."""
    drafts = None if draft_gpu_layers == gpu_layers else draft_gpu_layers
    offloads = bool(gpu_layers) or bool(drafts)
    return Machine(cpu_model(), threads or os.cpu_count() or 1, llama_cpp_build(), gpu_layers, drafts,
                   gpu_model() if offloads else "")


@dataclass(frozen=True)
class ModelProfile:
    """Measured costs of one model on this machine, in seconds."""

    model: str
    identity: str  # sha256 or path of the file measured: a replaced file is measured again
    prefill_base_s: float  # fixed cost of one prefill call
    prefill_tps: float  # prompt tokens per second on top of the fixed cost
    decode_s: float  # one plain decode step (one token, its logits)
    verify_s: tuple[float, ...]  # [k-1]: evaluate the pending token + k draft tokens, all logits
    draft_token_s: float | None = None  # one drafted token (decode + pick), for model drafters
    # The plain steps right after a verify batch, beyond plain ones (DRAFTING.settle_steps of
    # them; a GPU re-captures its decode graph): 0 in profiles measured before it was.
    settle_s: float = 0.0
    quick: bool = False
    measured_at: str = ""
    # llama.cpp threads it was measured with, when fewer than the machine's (measured on first
    # use while other processes were busy); None: the machine's thread count.
    threads: int | None = None

    def prefill(self, n_tokens: float) -> float:
        return self.prefill_base_s + max(n_tokens, 1.0) / self.prefill_tps

    def verify(self, k: int) -> float:
        k = max(1, min(k, len(self.verify_s)))
        return self.verify_s[k - 1]

    def slower(self, factor: float) -> "ModelProfile":
        """The same model with every cost multiplied by `factor`."""
        return replace(
            self, prefill_base_s=self.prefill_base_s * factor, prefill_tps=self.prefill_tps / factor,
            decode_s=self.decode_s * factor, verify_s=tuple(v * factor for v in self.verify_s),
            draft_token_s=None if self.draft_token_s is None else self.draft_token_s * factor,
            settle_s=self.settle_s * factor,
        )


def thread_slowdown(measured: int, threads: int) -> float:
    """How much longer a llama.cpp step takes on `threads` threads than on the `measured` ones.

    A step's speed-up from more threads is at most linear (2 threads against 1: 1.6x on
    smollm2-135m, bench/decode_speed.py), so measured / threads bounds the slowdown from above:
    an honest prediction for an answer that gets fewer cores than the calibration had. More
    threads than measured are not assumed to be faster.
    """
    return max(1.0, measured / max(threads, 1))


@dataclass
class Profile:
    """Every model's profile on one machine; saved as JSON in the user data dir."""

    machine: Machine
    models: dict[str, ModelProfile] = field(default_factory=dict)
    ngram_s: float = 5e-5  # one step of the n-gram drafter (measured with the models)

    def to_json(self) -> dict:
        return {
            "version": PROFILE_VERSION,
            # without "gpu" where it is "" (no offload): a CPU profile reads as before, in older qroutes too
            "machine": {k: v for k, v in asdict(self.machine).items() if k != "gpu" or v},
            "ngram_s": self.ngram_s,
            "models": {name: asdict(m) for name, m in self.models.items()},
        }

    def at_threads(self, threads: int | None) -> "Profile":
        """This profile for an answer run on `threads` llama.cpp threads (None: as measured)."""
        if threads is None:
            return self
        factors = {n: thread_slowdown(m.threads or self.machine.threads, threads) for n, m in self.models.items()}
        if all(f == 1.0 for f in factors.values()):
            return self
        return Profile(self.machine, {n: m.slower(factors[n]) for n, m in self.models.items()}, self.ngram_s)

    def only(self, names) -> "Profile":
        """A copy of this profile with only the models in `names` (and their drafting copies)."""
        keep = set(names)
        return Profile(self.machine, {n: m for n, m in self.models.items() if n.removesuffix(DRAFT_COPY) in keep},
                       self.ngram_s)

    def drafter(self, name: str) -> ModelProfile:
        """Model `name` as a drafter: its drafting copy where drafters are placed apart
        (Machine.draft_gpu_layers), else the model as measured."""
        if self.machine.draft_gpu_layers is not None and draft_copy(name) in self.models:
            return self.models[draft_copy(name)]
        return self.models[name]

    @classmethod
    def from_json(cls, data: dict) -> "Profile":
        """Read a saved profile; ValueError says what is wrong (it may have been edited by hand)."""
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, found {_json_type(data)}")
        if data.get("version") != PROFILE_VERSION:
            raise ValueError(f"profile version {data.get('version')!r}, expected {PROFILE_VERSION}")
        machine, models = data.get("machine"), data.get("models")
        if not isinstance(machine, dict) or not isinstance(models, dict):
            raise ValueError("'machine' and 'models' must be JSON objects")
        try:
            machine = Machine(**machine)
        except TypeError as exc:
            raise ValueError(f"machine: {exc}") from None
        if not (isinstance(machine.cpu, str) and isinstance(machine.llama_cpp, str)
                and isinstance(machine.threads, int) and machine.threads >= 1
                and isinstance(machine.gpu_layers, int)
                and (machine.draft_gpu_layers is None or isinstance(machine.draft_gpu_layers, int))
                and isinstance(machine.gpu, str)):
            raise ValueError("machine: cpu, threads, llama_cpp, gpu_layers, draft_gpu_layers or gpu has the wrong type")
        profiles = {}
        for name, m in models.items():
            if not isinstance(m, dict):
                raise ValueError(f"model '{name}': expected a JSON object, found {_json_type(m)}")
            m = dict(m)
            verify = m.get("verify_s")
            if not isinstance(verify, list) or not verify:
                raise ValueError(f"model '{name}': verify_s must be a non-empty list")
            m["verify_s"] = tuple(_seconds(x, f"{name}.verify_s") for x in verify)
            try:
                mp = ModelProfile(**m)
            except TypeError as exc:
                raise ValueError(f"model '{name}': {exc}") from None
            _seconds(mp.prefill_base_s, f"{name}.prefill_base_s", zero_ok=True)
            _seconds(mp.prefill_tps, f"{name}.prefill_tps")
            _seconds(mp.decode_s, f"{name}.decode_s")
            if mp.draft_token_s is not None:
                _seconds(mp.draft_token_s, f"{name}.draft_token_s")
            _seconds(mp.settle_s, f"{name}.settle_s", zero_ok=True)
            profiles[name] = mp
        ngram_s = _seconds(data.get("ngram_s", Profile.ngram_s), "ngram_s", zero_ok=True)
        return cls(machine, profiles, ngram_s)


def _json_type(value) -> str:
    return "null" if value is None else {list: "a list", str: "a string"}.get(type(value), type(value).__name__)


def _seconds(value, what: str, zero_ok: bool = False) -> float:
    """A finite positive number (or zero where allowed) from a profile, else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{what} must be a positive number, found {value!r}")
    return float(value)


class ProfileError(ValueError):
    """A saved profile that cannot be used: `path` is the file, `reason` what is wrong."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


# Where one profile for every setup lived before profiles were kept per setup.
_LEGACY_FILES = ("profile.json", "profile.other-machine.json")


def profile_dir() -> Path:
    return paths.data_dir() / "profiles"


def profile_path(machine: Machine | None = None) -> Path:
    """The profile of one setup (CPU, threads, GPU layers, llama.cpp build; default: this one).

    One file per setup: calibrating with other --threads or --gpu-layers never touches the
    profile of another setup, and switching back finds it again.
    """
    m = machine or current_machine()
    digest = hashlib.sha256(m.key.encode("utf-8")).hexdigest()[:12]
    gpu = f"-{m.gpu_layers}gpu" if m.gpu_layers else ""
    if m.draft_gpu_layers is not None:
        gpu += f"-d{m.draft_gpu_layers}gpu"
    return profile_dir() / f"{m.threads}threads{gpu}-{digest}.json"


def saved_profiles() -> list[Path]:
    return sorted(profile_dir().glob("*.json")) if profile_dir().is_dir() else []


def _read_profile(path: Path) -> Profile:
    try:
        return Profile.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProfileError(path, str(exc)) from None


def _adopt_legacy_profiles() -> None:
    """Move a profile of an older qroute to its setup's place (kept aside if that is taken)."""
    for name in _LEGACY_FILES:
        old = paths.data_dir() / name
        if not old.exists():
            continue
        target = profile_path(_read_profile(old).machine)
        try:
            paths.private_dir(target.parent)
            paths.rename_new(old, target)
        except FileExistsError:
            paths.move_aside(old, "older")
        except OSError:
            pass  # a read-only data dir: it stays where it is


def load_profile(path: Path | None = None, *, machine: Machine | None = None) -> Profile | None:
    """The saved profile of `machine` (default: this setup), or of the file `path`.

    None when there is none; ProfileError when the file cannot be used.
    """
    if path is not None:
        return _read_profile(path) if path.exists() else None
    machine = machine or current_machine()
    _adopt_legacy_profiles()
    path = profile_path(machine)
    if not path.exists():
        return None
    profile = _read_profile(path)
    return profile if profile.machine == machine else None


def usable_profile(machine: Machine, warn: Callable[[str], None]) -> Profile | None:
    """This setup's saved profile; a file that cannot be used is moved aside, with a warning.

    It is kept (never deleted) for the user to look at, and it no longer stops every run.
    """
    try:
        return load_profile(machine=machine)
    except ProfileError as exc:
        try:
            kept = paths.move_aside(exc.path, "unusable")
            warn(f"The calibration profile {exc.path} cannot be used ({exc.reason}); it was kept as "
                 f"{kept.name} and will be measured again.")
        except OSError:
            warn(f"The calibration profile {exc.path} cannot be used ({exc.reason}); it is ignored.")
        return None


def save_profile(profile: Profile, path: Path | None = None) -> Path:
    """Write atomically and owner-only (a crash never leaves half a profile)."""
    path = path or profile_path(profile.machine)
    paths.private_dir(path.parent)
    return paths.write_private(path, json.dumps(profile.to_json(), indent=1))


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the latency model -----------------------------------------------------------------


def base_prefill(profile: Profile, registry: Registry, pair: Pair, prompt_tokens: float) -> float:
    """The verifier's prefill: what stands between the prompt and the first token."""
    return profile.models[pair.verifier].prefill(prompt_tokens)


def draft_prefill(profile: Profile, pair: Pair, prompt_tokens: float) -> float:
    """A model drafter's own first pass over the prompt (paid after the first token)."""
    if pair.drafter_kind != "model":
        return 0.0
    return profile.drafter(pair.drafter).prefill(prompt_tokens)


def cost_curve(profile: Profile, pair: Pair) -> CostCurve | None:
    """What one step of `pair` costs, from the profile: the curve the engine drafts by.

    None for a pair without a drafter. The verifier's batches: its decode step (1 token), then
    the verify batches calibration measured (2..DRAFTING.max_len + 1 tokens). A model drafter
    pays its measured cost per drafted token and, after a fully accepted draft, a batch of two
    instead of one (its own batch of 2 less its decode step).
    """
    if pair.drafter == DRAFTER_NONE:
        return None
    v = profile.models[pair.verifier]
    verify = (v.decode_s,) + tuple(v.verify_s)
    if pair.drafter == DRAFTER_NGRAM:
        return CostCurve(verify, draft_s=profile.ngram_s, settle_s=v.settle_s)
    d = profile.drafter(pair.drafter)
    draft = d.draft_token_s if d.draft_token_s is not None else d.decode_s
    return CostCurve(verify, draft_s=draft, catchup_s=max(d.verify(1) - d.decode_s, 0.0), settle_s=v.settle_s)


def base_per_token(profile: Profile, pair: Pair, acceptance: float | None) -> tuple[float, int]:
    """Seconds per output token from the profile alone, and the draft length it assumes."""
    curve = cost_curve(profile, pair)
    if curve is None or acceptance is None:
        return profile.models[pair.verifier].decode_s, 0
    # The engine's rule picks k for the steps that carry a draft; an n-gram lookup finds one
    # on only some steps, and the rest run plain.
    k, _ = best_draft_len(curve, acceptance, DRAFTING.max_len)
    coverage = DRAFTING.ngram_coverage if pair.drafter == DRAFTER_NGRAM else 1.0
    return seconds_per_token(curve, k, acceptance, coverage), k


def missing_models(profile: Profile | None, registry: Registry, pairs: Sequence[Pair]) -> list[str]:
    """Models the pairs need that the profile has not measured (or measured from another file)."""
    need: list[str] = []
    apart = profile is not None and profile.machine.draft_gpu_layers is not None
    for pair in pairs:
        for spec in registry.pair_models(pair):
            copies = [spec.name] + ([draft_copy(spec.name)] if apart and spec.name == pair.drafter else [])
            for copy in copies:  # calibration measures a model's drafting copy with the model
                have = profile.models.get(copy) if profile else None
                if (have is None or have.identity != spec.identity) and spec.name not in need:
                    need.append(spec.name)
    return need


def log_ratio(observed: float, predicted: float) -> float | None:
    if observed <= 0 or predicted <= 0:
        return None
    return math.log(observed / predicted)
