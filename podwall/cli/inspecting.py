"""Inspection in `analyze` and `check`: the options, reading captures with the inspectors on, reporting.

Findings are attached to groups by the policy (see inspect/setup.py), each one's triggering
frames are saved as a pcap that its event points to, and the findings are printed after the
conversations or verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from podwall.analysis.inspection import InspectedRun, NamedFinding, attach_findings, inspect_captures, save_pcaps
from podwall.analysis.runner import NamedFlow
from podwall.cli.common import _check_files, _fail, _Problems, _progress, err
from podwall.core.errors import PodwallError
from podwall.inventory.resolver import Resolver
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy

InspectOpt = Annotated[
    bool,
    typer.Option(
        "--inspect/--no-inspect", help="run the inspectors (network threats, WAF, DLP) on the traffic (default on)"
    ),
]
ParanoiaOpt = Annotated[
    int | None, typer.Option("--paranoia", min=1, max=4, help="CRS paranoia level (overrides the policy's)")
]
PcapDirOpt = Annotated[
    Path | None,
    typer.Option("--pcap-dir", help="save each finding's triggering packets here (check: default beside the store)"),
]


def default_pcap_dir(db: str | None = None) -> Path:
    """Beside the event store: next to the SQLite file that `db` (else $PODWALL_DB) names, else
    $XDG_DATA_HOME/podwall/pcaps (beside the default store)."""
    import os

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from podwall.store.db import default_db_path

    location = (db if db is not None else os.environ.get("PODWALL_DB", "")).strip()
    if location:
        if "://" not in location:
            return Path(location).expanduser().absolute().parent / "pcaps"
        try:
            url = make_url(location)
        except ArgumentError:
            url = None
        if url is not None and url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return Path(str(url.database)).expanduser().absolute().parent / "pcaps"
    return default_db_path().parent / "pcaps"


def inspected_flows(
    captures: Sequence[Path],
    resolver: Resolver,
    problems: _Problems,
    policy: Policy | None,
    paranoia: int | None,
) -> tuple[list[NamedFlow], list[NamedFinding]]:
    """Read the captures with the inspectors on; returns the flows and the findings the policy attaches."""
    from podwall.inspect.setup import InspectOptions, Inspectors

    _check_files(captures, "capture file")
    try:
        inspectors = Inspectors(policy, InspectOptions(paranoia=paranoia))
    except PodwallError:
        raise
    except (OSError, RuntimeError) as exc:
        raise _fail(f"cannot start the inspectors: {exc}") from None
    for warning in inspectors.warnings:
        if not problems.quiet:
            err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    run = InspectedRun()
    with _progress(captures) as advance:
        flows = list(
            inspect_captures(captures, resolver, inspectors.inspection, run, on_problem=problems, progress=advance)
        )
    problems.summary()
    engine = PolicyEngine(policy) if policy is not None else None
    kept = attach_findings(run.findings, inspectors, engine)
    kept.sort(key=lambda nf: (nf.source, nf.finding.ts, nf.finding.frame, nf.finding.id))
    return flows, kept


def keep_pcaps(findings: Sequence[NamedFinding], directory: Path | None) -> None:
    if directory is None or not findings:
        return
    try:
        save_pcaps(findings, directory)
    except OSError as exc:
        raise _fail(f"--pcap-dir: cannot write {directory}: {exc.strerror or exc}") from None
