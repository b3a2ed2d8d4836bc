"""The one error type users see as a message, never as a traceback."""

from __future__ import annotations


class QrouteError(Exception):
    """A failure the user can act on: `hint` says what to do next."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(QrouteError):
    """models.toml or a user config is invalid."""

    exit_code = 2


class UsageError(QrouteError):
    """Bad command-line input (budget, strategy, pair name...)."""

    exit_code = 2


class ModelMissingError(QrouteError):
    """A model file is not in the cache yet."""

    exit_code = 3


class ModelCorruptError(QrouteError):
    """A model file exists but its size or SHA-256 is wrong, or llama.cpp cannot load it."""

    exit_code = 3


class FetchError(QrouteError):
    """Downloading or assembling a model failed."""

    exit_code = 4


class PromptTooLongError(QrouteError):
    """The prompt does not fit the model's context window."""

    exit_code = 2


class StoreError(QrouteError):
    """The learning store could not be used (locked, unreadable, from a newer qroute)."""

    exit_code = 2


def did_you_mean(name: str, options: list[str]) -> str:
    """A 'Did you mean …?' suffix for an unknown name, or a list of the valid ones."""
    import difflib

    close = difflib.get_close_matches(name, options, n=1)
    if close:
        return f"Did you mean '{close[0]}'?"
    return "Valid names: " + ", ".join(sorted(options)) if options else ""


class EndpointError(QrouteError):
    """A remote endpoint refused, timed out, failed or answered something unreadable.

    `kind`: "refused", "timeout", "http", "dropped" or "bad_response"; `status`: the HTTP status
    when there was one; `shown`: pieces of text already streamed to the caller before it failed.
    """

    exit_code = 4

    def __init__(self, message: str, hint: str | None = None, *, endpoint: str = "", kind: str = "http",
                 status: int | None = None, shown: int = 0) -> None:
        super().__init__(message, hint)
        self.endpoint, self.kind, self.status, self.shown = endpoint, kind, status, shown

    @property
    def endpoint_fault(self) -> bool:
        """The endpoint itself is at fault (down, broken, misconfigured), not this one request
        (400, 413, 422: e.g. a prompt longer than its context)."""
        return self.status not in (400, 413, 422)
