"""The enforcer's control directory: how `podwall quarantine` and tests talk to a running `podwall enforce`.

Two small JSON files, each replaced atomically (write, then rename):

- `service.json`, written by the service: its pid, namespace, fail mode, policy version, the
  worker processes (queue, pid, ready, restarts), the quarantine it has applied (with the
  generation of the request), the digest of the inventory files in force (`inventory_digest`)
  and the last error. It is removed on a clean stop.
- `quarantine.json`, written by `podwall quarantine add|remove`: the wanted quarantine list and
  a generation number. The service polls it, re-applies the plan with the new list, and reports
  the generation it applied (or the error, e.g. an unknown workload) in `service.json`. The list
  persists: a later `podwall enforce` with the same control directory starts with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from podwall.core.errors import PodwallError

STATUS_FILE = "service.json"
QUARANTINE_FILE = "quarantine.json"


class ControlError(PodwallError):
    """The running service could not be reached or refused a request."""


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace `path` with `data` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when it is missing or unreadable (being replaced)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_status(control_dir: Path) -> dict[str, Any] | None:
    """The running service's status, or None when no live service owns the directory."""
    status = read_json(control_dir / STATUS_FILE)
    if status is None or not _alive(int(status.get("pid", 0))):
        return None
    return status


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_quarantine(control_dir: Path) -> tuple[int, list[str]]:
    """(generation, names) of the persisted quarantine list; (0, []) when there is none."""
    data = read_json(control_dir / QUARANTINE_FILE) or {}
    names = data.get("workloads", [])
    generation = data.get("generation", 0)
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or not isinstance(generation, int):
        raise ControlError(f"{control_dir / QUARANTINE_FILE}: malformed (want generation and a workloads list)")
    return generation, names


def request_quarantine(control_dir: Path, ref: str, add: bool, wait: float = 15.0) -> dict[str, Any]:
    """Add `ref` to (or remove it from) the quarantine list, and, when a service runs, wait until it
    has applied the change. Returns {"applied": bool, "workloads": [...], "running": bool}.

    A change the service refuses (an unknown workload) is rolled back and raised as ControlError."""
    generation, names = read_quarantine(control_dir)
    before = list(names)
    if add and ref not in names:
        names.append(ref)
    elif not add:
        if ref not in names:
            raise ControlError(f"{ref!r} is not quarantined (quarantined: {', '.join(names) or 'nothing'})")
        names.remove(ref)
    generation += 1
    write_json(control_dir / QUARANTINE_FILE, {"generation": generation, "workloads": names})
    if read_status(control_dir) is None:
        return {"applied": False, "workloads": names, "running": False}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = read_status(control_dir)
        if status is None:
            break
        if status.get("quarantine_error_generation") == generation:
            write_json(control_dir / QUARANTINE_FILE, {"generation": generation + 1, "workloads": before})
            raise ControlError(f"the enforcer refused the quarantine: {status.get('quarantine_error')}")
        if status.get("quarantine_generation", 0) >= generation:
            return {"applied": True, "workloads": names, "running": True}
        time.sleep(0.1)
    raise ControlError(f"the enforcer did not apply the quarantine within {wait:.0f}s (see its log)")


def inventory_digest(contents: Sequence[bytes]) -> str:
    """The digest by which the service reports which inventory files it has in force: SHA-256 over
    each file's bytes, in the order the files are given."""
    h = hashlib.sha256()
    for data in contents:
        h.update(hashlib.sha256(data).digest())
    return h.hexdigest()


def wait_for_inventory(control_dir: Path, digest: str, wait: float = 15.0) -> bool:
    """When a service runs, wait until it has applied the inventory whose `inventory_digest` is
    `digest` (its address sets hold what the files say). False when no service runs; raises
    ControlError when it does not apply it in time or stops meanwhile."""
    if read_status(control_dir) is None:
        return False
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        status = read_status(control_dir)
        if status is None:
            raise ControlError("the enforcer stopped before it applied the new inventory (see its log)")
        if status.get("inventory_digest") == digest:
            return True
        time.sleep(0.05)
    raise ControlError(f"the enforcer did not apply the new inventory within {wait:.0f}s (see its log)")
