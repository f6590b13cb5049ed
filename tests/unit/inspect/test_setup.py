"""Attachment of findings to groups: DLP at either end's group, WAF into the server's group, threats always."""

from __future__ import annotations

import pytest

from podwall.core.events import Severity
from podwall.inspect.findings import Action, Finding, FindingKind
from podwall.inspect.setup import InspectOptions, Inspectors
from podwall.policy.formats.podwall_yaml import parse_policy

POLICY = """\
apiVersion: podwall.io/v1
kind: Policy
metadata: {name: t}
spec:
  groups:
    - name: pay
      criteria: [{key: service, op: '=', value: pay}]
      dlp: {status: true, settings: [{name: sensor.creditcard, action: deny}, {name: sensor.ssn, action: allow}]}
      waf: {status: true, settings: [{name: crs, action: deny}]}
    - name: web
      criteria: [{key: service, op: '=', value: web}]
    - name: hr
      criteria: [{key: service, op: '=', value: hr}]
      dlp: {status: false, settings: [{name: sensor.ssn, action: deny}]}
"""


@pytest.fixture(scope="module")
def inspectors() -> Inspectors:
    return Inspectors(parse_policy(POLICY), InspectOptions())


def _finding(kind: FindingKind, fid: str, action: Action = Action.ALERT, sensor: str | None = None) -> Finding:
    detail = {"sensor": sensor} if sensor else {}
    return Finding(kind, fid, fid, Severity.HIGH, action, "seen", detail=detail)


CARD = _finding(FindingKind.DLP, "dlp.sensor.creditcard/visa", sensor="sensor.creditcard")
SSN = _finding(FindingKind.DLP, "dlp.sensor.ssn/ssn", sensor="sensor.ssn")
SQLI_BLOCK = _finding(FindingKind.WAF, "waf.crs.942100", Action.DENY)
SQLI_LOW = _finding(FindingKind.WAF, "waf.crs.942100", Action.ALERT)
FLOOD = _finding(FindingKind.THREAT, "threat.syn_flood", Action.DROP)


@pytest.mark.parametrize(
    ("finding", "client", "server", "expected"),
    [
        pytest.param(CARD, ["web"], ["pay"], Action.DENY, id="dlp-into-guarded-group"),
        pytest.param(CARD, ["pay"], ["web"], Action.DENY, id="dlp-out-of-guarded-group"),
        pytest.param(CARD, ["web"], ["hr"], None, id="dlp-status-off"),
        pytest.param(SSN, ["web"], ["pay"], Action.ALERT, id="dlp-allow-is-alert"),
        pytest.param(SQLI_BLOCK, ["web"], ["pay"], Action.DENY, id="waf-into-guarded-group"),
        pytest.param(SQLI_BLOCK, ["pay"], ["web"], None, id="waf-out-of-group-not-guarded"),
        pytest.param(SQLI_LOW, ["web"], ["pay"], Action.ALERT, id="waf-below-threshold-stays-alert"),
        pytest.param(FLOOD, ["web"], ["hr"], Action.DROP, id="threats-apply-everywhere"),
    ],
)
def test_attach(
    inspectors: Inspectors, finding: Finding, client: list[str], server: list[str], expected: Action | None
) -> None:
    """A finding counts only where a group turned its sensor on, with that group's action."""
    attached = inspectors.attach(finding, client, server)
    assert (attached.action if attached is not None else None) == expected


@pytest.mark.parametrize(
    ("client", "server", "expected"),
    [(["web"], ["pay"], True), (["pay"], ["web"], True), (["web"], ["hr"], False), (["hr"], ["web"], False)],
)
def test_guards(inspectors: Inspectors, client: list[str], server: list[str], expected: bool) -> None:
    """Only connections touching a group with DLP or WAF on must stay in the inspection path."""
    assert inspectors.guards(client, server) is expected


def test_without_policy_everything_is_reported() -> None:
    """With no policy (analyze), every finding is reported as the inspector made it."""
    bare = Inspectors(None, InspectOptions(waf=False))
    assert bare.attach(CARD, ["a"], ["b"]) == CARD
    assert bare.dlp is not None and bare.waf is None
