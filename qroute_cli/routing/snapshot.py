"""The learned estimates, kept beside the learning store so a start folds only new runs.

The online estimates are a fold over this machine's latest ROUTING.replay_runs runs
(online.py). Replaying 2,000 logged runs costs a one-shot `qroute run` about a tenth of a
second: reading them and folding them, before the model even loads. So after a start has
folded SAVE_AFTER runs or more, it keeps what it learned in `runs.learned.json` beside
`runs.db`, with the id and time of the last run in it; the next start folds only the runs
logged after that one.

It is a cache and nothing else. It is used only when everything the fold depends on is as
it was: this setup's key, the calibration profile, the endpoint profiles, the models and
pairs, and the code of the fold itself (the fingerprint), and when its last run is still in
the store with the same time (a store reset or moved aside is a different store). Otherwise,
or when the file cannot be read, the fold starts over from the store. Deleting it loses
nothing. A cache in use keeps folding new runs onto what it holds, so once the log holds
more than replay_runs runs, the estimates also carry older runs than a fold from scratch
would; every estimate forgets old runs (online.py), so their weight is small either way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from qroute_cli import paths
from qroute_cli.config import Registry
from qroute_cli.routing.latency import Profile
from qroute_cli.routing.online import OnlineEstimates
from qroute_cli.routing.remote import RemoteProfile

FORMAT = 1
# A start that folded this many runs on top of the cache keeps the result: a start pays a
# few milliseconds for the write, and no start folds more than this many runs of the cache's age.
SAVE_AFTER = 50

# The modules whose code decides what a fold learns: a change to any of them is a new fold.
# router.py says which runs are timed; runlog.py what a logged run's fields mean.
_FOLD_CODE = ("online.py", "latency.py", "remote.py", "router.py", "runlog.py", "../speculation.py", "../tuning.py")


def snapshot_path(store_path: Path) -> Path:
    return store_path.with_name(store_path.stem + ".learned.json")


def fingerprint(machine_key: str, profile: Profile | None, remote: dict[str, RemoteProfile] | None,
                registry: Registry) -> str:
    """What the fold of a store depends on, hashed: equal fingerprints fold equal logs alike."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for name in _FOLD_CODE:
        digest.update((here / name).read_bytes())
    facts = [FORMAT, machine_key, profile.to_json() if profile else None,
             {name: asdict(rp) for name, rp in sorted((remote or {}).items())},
             [repr(m) for _, m in sorted(registry.models.items())],
             [repr(p) for _, p in sorted(registry.pairs.items())]]
    digest.update(json.dumps(facts, sort_keys=True, default=repr).encode("utf-8"))
    return digest.hexdigest()[:32]


def load(path: Path, key: str, stamp) -> tuple[OnlineEstimates, int] | None:
    """(estimates, id of the last run folded into them) from the cache at `path`, or None when
    it is missing, unreadable, made for another fingerprint than `key`, or its last run is gone
    (`stamp(id)` gives a run's logged time, None for no such run)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != FORMAT or data.get("key") != key:
            return None
        last_id, last_ts = int(data["last_id"]), float(data["last_ts"])
        if stamp(last_id) != last_ts:
            return None
        return OnlineEstimates.from_state(data["state"]), last_id
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(path: Path, key: str, online: OnlineEstimates, last_id: int, last_ts: float) -> None:
    """Keep `online`, the fold through run `last_id`; a cache that cannot be written is skipped."""
    data = {"format": FORMAT, "key": key, "last_id": last_id, "last_ts": last_ts, "state": online.state()}
    try:
        paths.write_private(path, json.dumps(data, separators=(",", ":"), allow_nan=False), durable=False)
    except (OSError, ValueError):
        pass
