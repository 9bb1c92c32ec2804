"""Snapshots: the trust book's statistics as a JSON file, written atomically.

Each replica writes only its own statistics to ``<snapshot_dir>/<replica_id>.json`` and
reads the other ``*.json`` files of the directory as its peers. Statistics are decayed
sums, so a replica's view is its own plus its peers' (``Totals.merged``); because nobody
writes what it read from a peer, nothing is counted twice. A restarted replica with the
same id continues from its own file; a new replica starts from its peers'.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .stats import Counts, Pair, Totals, Triple

FORMAT = "ensemble-extproc/trust/1"


class SnapshotError(ValueError):
    """A snapshot that cannot be used (unreadable, not ours, malformed)."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    replica: str
    written_at: float  # unix time
    keys: Mapping[str, Totals]


@dataclass(frozen=True, slots=True)
class Peers:
    """The other replicas' usable snapshots, and why any others were ignored."""

    snapshots: Mapping[str, Snapshot] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()


def snapshot_path(directory: str | Path, replica: str) -> Path:
    return Path(directory) / f"{safe_name(replica)}.json"


def safe_name(replica: str) -> str:
    """A replica id usable as a file name."""
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in replica)
    return cleaned.strip(".") or "replica"


# ---------------------------------------------------------------------- encoding


def encode(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "replica": snapshot.replica,
        "written_at": snapshot.written_at,
        "keys": {key: _encode_totals(t) for key, t in snapshot.keys.items()},
    }


def _encode_totals(t: Totals) -> dict[str, Any]:
    # Every field, in order; the counts of pairs and triples as rows (JSON keys are strings).
    doc = {f.name: getattr(t, f.name) for f in fields(t)}
    doc["pairs"] = [[a, b, c.n, c.n2, c.agree] for (a, b), c in t.pairs.items()]
    doc["triples"] = [[a, b, x, c.n, c.n2, c.agree] for (a, b, x), c in t.triples.items()]
    return doc


def decode(document: object) -> Snapshot:
    """A snapshot from parsed JSON; SnapshotError names what is wrong."""
    doc = _mapping(document, "snapshot")
    if doc.get("format") != FORMAT:
        raise SnapshotError(f"format is {doc.get('format')!r}, expected {FORMAT!r}")
    replica = doc.get("replica")
    if not isinstance(replica, str) or not replica:
        raise SnapshotError("replica must be a non-empty string")
    written_at = _number(doc.get("written_at"), "written_at")
    keys = _mapping(doc.get("keys"), "keys")
    return Snapshot(
        replica, written_at, {str(k): _decode_totals(v, f"keys.{k}") for k, v in keys.items()}
    )


def _decode_totals(raw: object, where: str) -> Totals:
    doc = _mapping(raw, where)
    members = doc.get("members")
    if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
        raise SnapshotError(f"{where}.members must be a list of model names")
    known = set(members)
    pairs: dict[Pair, Counts] = {}
    for row in _list(doc.get("pairs"), f"{where}.pairs"):
        a, b, *numbers = _row(row, 2, f"{where}.pairs", known)
        pairs[(a, b)] = Counts(*numbers)
    triples: dict[Triple, Counts] = {}
    for row in _list(doc.get("triples"), f"{where}.triples"):
        a, b, c, *numbers = _row(row, 3, f"{where}.triples", known)
        triples[(a, b, c)] = Counts(*numbers)
    return Totals(
        members=tuple(members),
        answered=_floats(doc.get("answered"), f"{where}.answered"),
        failed=_floats(doc.get("failed"), f"{where}.failed"),
        pairs=pairs,
        triples=triples,
        mass=_number(doc.get("mass"), f"{where}.mass"),
        observations=int(_number(doc.get("observations"), f"{where}.observations")),
        rejected=int(_number(doc.get("rejected", 0), f"{where}.rejected")),
        top_client_mass=_number(doc.get("top_client_mass", 0.0), f"{where}.top_client_mass"),
        top_client_share=_number(doc.get("top_client_share", 0.0), f"{where}.top_client_share"),
        clients=_floats(doc.get("clients", {}), f"{where}.clients"),
        changes={m: int(v) for m, v in _floats(doc.get("changes", {}), f"{where}.changes").items()},
    )


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise SnapshotError(f"{where} must be an object")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise SnapshotError(f"{where} must be a list")
    return value


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise SnapshotError(f"{where} must be a finite number")
    if value < 0:
        raise SnapshotError(f"{where} must not be negative")
    return float(value)


def _floats(value: object, where: str) -> dict[str, float]:
    return {str(k): _number(v, f"{where}.{k}") for k, v in _mapping(value, where).items()}


def _row(row: object, names: int, where: str, known: set[str]) -> list[Any]:
    if not isinstance(row, list) or len(row) != names + 3:
        raise SnapshotError(f"{where}: each entry must be {names} names and 3 numbers")
    models = row[:names]
    if not all(isinstance(m, str) and m in known for m in models):
        raise SnapshotError(f"{where}: {models!r} are not all members")
    if list(models) != sorted(models) or len(set(models)) != names:
        raise SnapshotError(f"{where}: {models!r} must be distinct and sorted")
    n, n2, agree = (_number(x, where) for x in row[names:])
    if agree > n * (1 + 1e-9):
        raise SnapshotError(f"{where}: {models!r} agree more often than they answered")
    return [*models, n, n2, agree]


# ------------------------------------------------------------------------- files


def write_atomic(path: Path, snapshot: Snapshot) -> None:
    """Write to a temporary file beside ``path``, fsync, then rename over it: a reader,
    or a restart after a crash, sees the old snapshot or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(encode(snapshot), separators=(",", ":")).encode()
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            # Readable by peers that run as another user on a shared volume (no secrets:
            # clients appear as hashes).
            os.fchmod(file.fileno(), 0o644)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read(path: Path) -> Snapshot:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise SnapshotError(f"{path} is not JSON: {exc}") from exc
    try:
        return decode(document)
    except SnapshotError as exc:
        raise SnapshotError(f"{path}: {exc}") from exc


def read_peers(directory: Path, replica: str, now: float, max_age_seconds: float) -> Peers:
    """Every other replica's snapshot in ``directory`` that is recent and readable."""
    own = snapshot_path(directory, replica).name
    snapshots: dict[str, Snapshot] = {}
    ignored: list[str] = []
    if not directory.is_dir():
        return Peers()
    for path in sorted(directory.glob("*.json")):
        if path.name == own:
            continue
        try:
            snapshot = read(path)
        except SnapshotError as exc:
            ignored.append(str(exc))
            continue
        age = now - snapshot.written_at
        if age > max_age_seconds:
            ignored.append(f"{path}: written {age:.0f} s ago (peer_max_age_seconds)")
        elif snapshot.replica == replica:
            ignored.append(f"{path}: carries this replica's own id {replica!r}")
        elif snapshot.replica in snapshots:
            ignored.append(f"{path}: a second file of replica {snapshot.replica!r}")
        else:
            snapshots[snapshot.replica] = snapshot
    return Peers(snapshots, tuple(ignored))
