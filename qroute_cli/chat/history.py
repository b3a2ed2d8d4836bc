"""The conversation: turns, the part of them still in the model's context, and /save's formats."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from qroute_cli.errors import QrouteError, UsageError
from qroute_cli.types import Message, SpecStats


@dataclass(frozen=True)
class Turn:
    """One question and its answer, with what produced it."""

    user: str
    assistant: str
    pair: str = ""
    finish: str = "stop"
    stats: SpecStats | None = None


@dataclass
class History:
    """The conversation: a system message and turns; turns before `first` left the model's context."""

    system: str | None = None
    turns: list[Turn] = field(default_factory=list)
    first: int = 0

    def context(self) -> list[Turn]:
        return self.turns[self.first:]

    def messages(self, user: str | None = None) -> list[Message]:
        """What the model sees: system, the turns still in context, then `user` if given."""
        msgs = [Message("system", self.system)] if self.system else []
        for t in self.context():
            msgs += [Message("user", t.user), Message("assistant", t.assistant)]
        if user is not None:
            msgs.append(Message("user", user))
        return msgs

    def add(self, turn: Turn) -> None:
        self.turns.append(turn)

    def drop_oldest(self) -> bool:
        """Take the oldest turn out of the context; False when none is left."""
        if self.first >= len(self.turns):
            return False
        self.first += 1
        return True

    def reset(self) -> None:
        self.turns.clear()
        self.first = 0

    # -- saving -------------------------------------------------------------------------

    def to_json(self) -> dict:
        """Messages (all turns, ready to feed back) plus per-turn metadata."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        turns = []
        for i, t in enumerate(self.turns):
            msgs += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.assistant}]
            meta = {"pair": t.pair, "finish_reason": t.finish, "in_context": i >= self.first}
            if t.stats is not None:
                meta.update(tokens=t.stats.output_tokens, prompt_tokens=t.stats.prompt_tokens,
                            prompt_cached=t.stats.prompt_cached, ttft_s=round(t.stats.ttft_s, 4),
                            latency_s=round(t.stats.latency_s, 4))
            turns.append(meta)
        return {"format": "qroute-chat", "version": 1, "system": self.system, "messages": msgs, "turns": turns}

    def to_markdown(self) -> str:
        parts = ["# qroute chat\n"]
        if self.system:
            parts.append(f"**System:** {self.system}\n")
        for t in self.turns:
            parts.append(f"## You\n\n{t.user}\n")
            note = f" ({t.pair})" if t.pair else ""
            if t.finish == "interrupted":
                note += " — interrupted"
            parts.append(f"## Assistant{note}\n\n{t.assistant}\n")
        return "\n".join(parts)

    def save(self, path: Path, *, overwrite: bool = False) -> str:
        """Write JSON for *.json, Markdown otherwise; returns the format written.

        Written whole or not at all, owner-only; an existing file is replaced only with
        `overwrite`.
        """
        from qroute_cli import paths

        kind = "json" if path.suffix.lower() == ".json" else "markdown"
        text = json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n" if kind == "json" else self.to_markdown()
        try:
            paths.write_private(path, text, overwrite=overwrite)
        except FileExistsError:
            raise UsageError(f"{path} exists already.", "Replace it with /save FILE --force, or pick another name.") from None
        except OSError as exc:
            raise QrouteError(f"Could not write {path}: {exc.strerror or exc}.", "Pick another file name.") from exc
        return kind
