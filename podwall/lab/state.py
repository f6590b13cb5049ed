"""The lab's state file: what `lab up` created (or was about to create), for `status`, `exec` and `down`.

Written before the first kernel object exists and after every process start, atomically
(write then rename), so that `lab down` from a fresh process can undo a lab whose creator
crashed at any point. The file is JSON and names only things that can be checked for
existence (namespaces, directories, pids with their start times).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"
SPEC_FILE = "spec.json"  # the validated LAB.yaml the lab was built from (pods are added from it)
ADDED_FILE = "added.json"  # pods added to the running lab (`podwall.lab.scale`)
STATE_VERSION = 1


@dataclass(slots=True)
class ProcessRecord:
    pod: str
    kind: str
    pid: int
    start_time: int  # field 22 of /proc/PID/stat: tells a recycled pid from ours
    argv: list[str]
    log: str
    stop_signal: int
    ready: tuple[str, int] | None = None


@dataclass(slots=True)
class PodRecord:
    name: str
    namespace: str
    workload: str
    kind: str
    netns: str
    veth: str
    ips: list[str]
    server: str
    port: int | None


@dataclass(slots=True)
class LabState:
    lab: str
    state_dir: str
    spec_file: str | None
    node_netns: str
    pods: list[PodRecord]
    etc_netns: list[str]  # /etc/netns/<ns> directories this lab made
    nat_table: str
    inventory: str
    phase: str = "creating"  # creating -> up
    processes: list[ProcessRecord] = field(default_factory=list)
    version: int = STATE_VERSION

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of the lab, pods first (the node holds their veth peers)."""
        return [p.netns for p in self.pods] + [self.node_netns]

    def save(self) -> None:
        path = Path(self.state_dir) / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.{os.getpid()}")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)


def _process(data: dict[str, Any]) -> ProcessRecord:
    ready = data.get("ready")
    return ProcessRecord(**{**data, "ready": tuple(ready) if ready else None})


def load_state(state_dir: Path) -> LabState:
    """Read a state file; raises OSError or ValueError (with the path) when it is unreadable."""
    path = state_dir / STATE_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: not a podwall lab state file of version {STATE_VERSION}")
    try:
        return LabState(
            **{
                **data,
                "pods": [PodRecord(**p) for p in data["pods"]],
                "processes": [_process(p) for p in data.get("processes", [])],
            }
        )
    except (TypeError, KeyError) as exc:
        raise ValueError(f"{path}: malformed state file ({exc})") from None
