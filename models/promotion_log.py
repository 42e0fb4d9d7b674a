"""The hash-chained promotion log, the per-model write lock and the records of registered versions
(:class:`ModelRef`); no MLflow here.

Every alias move (and every rejection) of the registry is appended to
``<home>/registry/promotions.jsonl`` (MLflow keeps no alias history); each line carries the
SHA-256 of the previous line, so :func:`read_promotion_log` detects edits. Writes of one model hold
:func:`model_lock` (an OS file lock under ``<home>/registry/locks``), so concurrent processes
register and promote one at a time. :mod:`models.registry` checks the registry against this log.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from features.errors import ConfigError, RegistryError
from models.base import jsonable

MODEL_NAME = "dprm-forecaster"
"""The registered model of the volatility forecaster."""
CHAMPION = "champion"
CHALLENGER = "challenger"
LOCK_TIMEOUT_S = 900.0
"""How long registration or promotion waits for another process holding the model's lock."""
SQLITE_HEADER = b"SQLite format 3\x00"


def promotion_log_path(home: Path) -> Path:
    """``<home>/registry/promotions.jsonl``."""
    return Path(home).resolve() / "registry" / "promotions.jsonl"


def append_promotion_log(home: Path, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Append one event (JSON line) to the promotion log, under an exclusive file lock.

    Adds ``seq`` (1, 2, ...), ``ts`` (UTC ISO time) and ``prev_sha256`` (hash of the previous line,
    "" for the first), so :func:`read_promotion_log` detects any edit. Returns the written entry.
    """
    path = promotion_log_path(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            fh.seek(0)
            lines = [ln for ln in fh.read().splitlines() if ln.strip()]
            prev = hashlib.sha256(lines[-1]).hexdigest() if lines else ""
            record = {
                "seq": len(lines) + 1,
                "ts": pd.Timestamp.now(tz="UTC").isoformat(),
                **{k: jsonable(v) for k, v in entry.items()},
                "prev_sha256": prev,
            }
            fh.seek(0, os.SEEK_END)
            fh.write(json.dumps(record, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return record


def read_promotion_log(home: Path, *, verify: bool = True) -> list[dict[str, Any]]:
    """All events of the promotion log, oldest first; with ``verify`` the hash chain and the
    sequence numbers are checked (:class:`RegistryError` naming the first bad line)."""
    path = promotion_log_path(home)
    if not path.exists():
        return []
    raw = [ln for ln in path.read_bytes().splitlines() if ln.strip()]
    out, prev = [], ""
    for i, line in enumerate(raw, start=1):
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise RegistryError(
                f"{path}: line {i} is not a JSON record; the promotion log is corrupt"
            ) from None
        if verify and (
            not isinstance(rec, dict) or rec.get("prev_sha256") != prev or rec.get("seq") != i
        ):
            raise RegistryError(
                f"{path}: line {i} breaks the append-only chain (prev_sha256/seq do not match the "
                "previous line); the log was edited"
            )
        prev = hashlib.sha256(line).hexdigest()
        out.append(rec)
    return out


# ---- one writer per model, and the registry checked against the log ---------------------------
def _lock_file(home: Path, name: str) -> Path:
    return (
        Path(home).resolve()
        / "registry"
        / "locks"
        / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.lock"
    )


@contextlib.contextmanager
def model_lock(
    home: Path, name: str = MODEL_NAME, *, timeout_s: float | None = None
) -> Iterator[Path]:
    """Hold the registration/promotion lock of model ``name`` (``<home>/registry/locks/``).

    An OS file lock (``filelock``): processes sharing ``home`` register and promote one at a
    time, and a thread of the same process waits too. Re-entrant within one thread, so
    :func:`register_challenger` and :func:`promote` can run inside a caller's lock. MLflow has no
    compare-and-set on tags or aliases; this lock is what makes "find the version with this key,
    else register it" safe. Waiting longer than ``timeout_s`` (default :data:`LOCK_TIMEOUT_S`) is a
    :class:`RegistryError`. Yields the lock file's path.
    """
    from filelock import FileLock, Timeout

    path = _lock_file(home, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), is_singleton=True)
    wait = LOCK_TIMEOUT_S if timeout_s is None else float(timeout_s)
    try:
        lock.acquire(timeout=wait)
    except Timeout:
        raise RegistryError(
            f"registration and promotion of {name!r} are held by another process for more than "
            f"{wait:g} s (lock {path}); wait for it to finish"
        ) from None
    try:
        yield path
    finally:
        lock.release()


def log_champions(home: Path) -> dict[str, str]:
    """Model name -> champion version according to the promotion log (the last ``promote`` or
    ``rollback`` of each model; models never promoted are absent)."""
    out: dict[str, str] = {}
    for e in read_promotion_log(home):
        if (
            e.get("alias") == CHAMPION
            and e.get("action") in ("promote", "rollback")
            and e.get("to_version") is not None
        ):
            out[str(e["name"])] = str(e["to_version"])
    return out


def champion_moves(
    home: Path, name: str, actions: Sequence[str] = ("promote", "rollback")
) -> list[dict[str, Any]]:
    """The log's ``champion`` events of model ``name`` whose action is one of ``actions``, oldest
    first (the chain verified)."""
    return [
        e
        for e in read_promotion_log(home)
        if e.get("name") == name and e.get("alias") == CHAMPION and e.get("action") in actions
    ]


def champion_mismatch(
    home: Path, uri: str, name: str, *, logged: str | None, registered: str | None, exists: bool
) -> RegistryError:
    """The error for a registry whose ``champion`` of ``name`` (``registered``) is not the one
    the log names (``logged``); ``exists``: whether the registry has a model of that name."""
    log = promotion_log_path(home)
    if registered is None:
        what = "has no champion alias on it" if exists else "has no model of that name"
        return RegistryError(
            f"the promotion log {log} names version {logged} of {name!r} as champion, but the "
            f"registry {uri} {what}: the registry was wiped, replaced or edited outside "
            "dprm; restore it from a backup, or move the log away to start a new registry"
        )
    logged_as = f"version {logged}" if logged is not None else "no champion"
    return RegistryError(
        f"the registry {uri} has version {registered} of {name!r} as champion, but the promotion "
        f"log {log} names {logged_as}: the alias was moved outside dprm; set it back "
        "or restore the registry from a backup"
    )


def previous_champion(home: Path, name: str, current: str) -> str:
    """The champion that version ``current`` of ``name`` replaced: the ``from_version`` of the
    log's last promotion to it (so repeated rollbacks walk back through the promotion history);
    :class:`~features.errors.ConfigError` when the log has none."""
    moves = [e for e in champion_moves(home, name, ("promote",)) if e.get("to_version") == current]
    if not moves or moves[-1].get("from_version") is None:
        raise ConfigError(
            f"the promotion log has no champion before version {current} of {name!r}; "
            "give the version with --to-version (to_version= in Python)"
        )
    return str(moves[-1]["from_version"])


@dataclass(frozen=True)
class ModelRef:
    """Which registered model produced a number: recorded with every margin result.

    Attributes
    ----------
    name, version : the registered model and version (a string, as MLflow has it).
    alias : the alias it was resolved through ("champion", "challenger") or None.
    run_id : the MLflow run the model was logged in.
    uri : ``models:/<name>/<version>`` (pinned to the version, not the alias).
    """

    name: str
    version: str
    alias: str | None
    run_id: str | None
    uri: str

    @classmethod
    def at(cls, name: str, version: int | str, alias: str | None, run_id: str | None) -> ModelRef:
        """The reference of version ``version`` of ``name`` (``uri`` pinned to that version)."""
        return cls(name, str(version), alias, run_id, f"models:/{name}/{version}")

    def as_tags(self) -> dict[str, str]:
        """Flat string fields for result metadata: model_name, model_version, model_alias, ..."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "model_alias": self.alias or "",
            "model_run_id": self.run_id or "",
            "model_uri": self.uri,
        }


def check_store_file(db: Path, home: Path) -> None:
    """Refuse a SQLite store that is not a database, or that is empty or missing while the
    promotion log records events (a wiped registry must not be silently re-created)."""
    size = db.stat().st_size if db.exists() else None
    if size:
        with open(db, "rb") as fh:
            head = fh.read(len(SQLITE_HEADER))
        if head != SQLITE_HEADER:
            raise RegistryError(
                f"the MLflow store {db} is not an SQLite database (it starts with {head[:8]!r}); "
                "restore it from a backup or point MLFLOW_TRACKING_URI at a working store"
            )
        return
    log = promotion_log_path(home)
    if log.exists() and log.stat().st_size > 0:
        state = "missing" if size is None else "empty (0 bytes)"
        champs = ", ".join(f"version {v} of {n!r}" for n, v in sorted(log_champions(home).items()))
        records = f"names {champs} as champion" if champs else "records registrations"
        raise RegistryError(
            f"the MLflow store {db} is {state} but the promotion log {log} {records}: the "
            f"registry was wiped; restore {db.name} from a backup, or move the log away to start "
            "a new registry"
        )


def log_event(
    home: Path,
    action: str,
    name: str,
    *,
    from_version: str | None,
    to_version: str | None,
    who: str,
    mode: str,
    reason: str,
    run_id: str | None,
    gate: Mapping[str, Any] | None = None,
    alias: str = CHAMPION,
    candidate_version: str | None = None,
) -> dict[str, Any]:
    """Append one registry event ("register_challenger", "promote", "reject", "rollback") to the
    promotion log (:func:`append_promotion_log`); alias moves write it before the alias moves.
    ``candidate_version`` (the version decided on) is recorded for promotions and rollbacks."""
    entry: dict[str, Any] = {
        "action": action,
        "name": name,
        "alias": alias,
        "from_version": from_version,
        "to_version": to_version,
        "who": who,
        "mode": mode,
        "reason": reason,
        "gate": gate,
        "run_id": run_id,
    }
    if candidate_version is not None:
        entry["candidate_version"] = candidate_version
    return append_promotion_log(home, entry)
