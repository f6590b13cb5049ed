"""The threat engine on the enforcer's tap: findings become events of the enforcer's schema; in
protect mode a blocking finding on one TCP connection asks for that connection to be cut, in
monitor mode it is only recorded; a new policy's threat settings apply after a reload."""

from __future__ import annotations

from pathlib import Path

import pytest

from podwall.core.events import EventType
from podwall.datapath.io.pcap import Frame
from podwall.enforce.drift import DriftCutter
from podwall.enforce.threatwatch import ThreatWatch
from podwall.inventory.loader import parse_inventory_text
from podwall.inventory.resolver import Resolver
from podwall.lab.synth import TcpConversation
from podwall.policy.evaluate import PolicyEngine
from podwall.policy.model import Policy
from tests.unit.enforce.worker_testkit import INVENTORY, policy_for

SMUGGLE = b"POST /a HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
PLAIN = b"GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def _frames(request: bytes) -> list[Frame]:
    conv = TcpConversation("10.1.0.1", 40000, "10.1.0.5", 8080, 1.0).send(True, request).send(False, OK)
    return [Frame(i + 1, ts, 1, data, len(data)) for i, (ts, data) in enumerate(conv.frames)]


def _watch(policy: Policy, tmp_path: Path | None = None) -> ThreatWatch:
    resolver = Resolver(parse_inventory_text(INVENTORY, "inv.yaml").inventory)
    return ThreatWatch(policy, PolicyEngine(policy), resolver, source="threats:test", pcap_dir=tmp_path)


@pytest.mark.parametrize(("mode", "cut"), [("protect", True), ("monitor", False)])
def test_smuggling_on_an_allowed_connection(mode: str, cut: bool, tmp_path: Path) -> None:
    """Request smuggling (drop by default) is an enforced threat event with a cut in protect mode,
    a recorded one without in monitor mode; the event points to the packets' pcap."""
    watch = _watch(policy_for(mode), tmp_path)
    outcomes = watch.feed(_frames(SMUGGLE))
    smuggling = [o for o in outcomes if o.event.detection is not None and "smuggl" in o.event.detection.id]
    assert smuggling, [o.event.detection for o in outcomes]
    outcome = smuggling[0]
    assert outcome.event.type is EventType.THREAT and outcome.event.source == "threats:test"
    assert outcome.event.detection is not None and outcome.event.detection.enforced is cut
    assert (outcome.cut is not None) is cut
    assert outcome.event.pcap is not None and Path(outcome.event.pcap).is_file()
    if outcome.cut is not None:
        target = outcome.cut.reset_target
        assert target is not None and (target.client_port, target.server_port) == (40000, 8080)


def test_ordinary_traffic_gives_nothing() -> None:
    """An ordinary request and answer raise no threat."""
    assert _watch(policy_for("protect")).feed(_frames(PLAIN)) == []


def _with(mode: str, inspection: dict[str, object] | None = None, waf_on_api: bool = False) -> Policy:
    doc = policy_for(mode).model_dump(mode="json", by_alias=True, exclude_none=True)
    if inspection is not None:
        doc["spec"]["inspection"] = inspection
    if waf_on_api:
        api = next(g for g in doc["spec"]["groups"] if g["name"] == "nv.api.shop")
        api["waf"] = {"status": True, "settings": [{"name": "crs", "action": "deny"}]}
    return Policy.model_validate(doc)


def test_new_threat_settings_need_a_new_watch_and_others_keep_the_state() -> None:
    """A policy with the same threat settings is taken in place (state kept); new settings are
    refused, and a watch built on them records smuggling set to alert without a cut."""
    watch = _watch(policy_for("protect"))
    same = _with("protect")
    assert watch.judge_by(same, PolicyEngine(same), watch.resolver)
    relaxed = _with("protect", {"threats": {"http_smuggling": {"action": "alert"}}})
    assert not watch.judge_by(relaxed, PolicyEngine(relaxed), watch.resolver)
    outcomes = _watch(relaxed).feed(_frames(SMUGGLE))
    assert outcomes and all(o.cut is None for o in outcomes)


def test_a_flood_is_recorded_but_cuts_no_one() -> None:
    """A SYN flood is found on whichever SYN crosses the threshold, often an innocent client's:
    recorded, never a cut."""
    watch = _watch(_with("protect", {"threats": {"syn_flood": {"threshold": 3, "window": 1.0}}}))
    frames: list[Frame] = []
    for port in range(41000, 41012):
        conv = TcpConversation("10.1.0.1", port, "10.1.0.5", 8080, 1.0 + (port - 41000) * 0.001)
        frames += [Frame(len(frames) + 1, ts, 1, data, len(data)) for ts, data in conv.frames[:1]]  # SYN only
    outcomes = watch.feed(frames)
    floods = [o for o in outcomes if o.event.detection is not None and o.event.detection.id == "threat.syn_flood"]
    assert floods and all(o.cut is None and not o.event.detection.enforced for o in floods if o.event.detection)


def test_connections_the_workers_inspect_are_left_to_them() -> None:
    """With WAF on the server's group the workers run the threats inline: the tap reports nothing twice."""
    assert _watch(_with("protect", waf_on_api=True)).feed(_frames(SMUGGLE)) == []


def test_the_drift_cutter_takes_a_threat_cut() -> None:
    """`DriftCutter` cuts a threat's connection as a drifted one: conntrack re-mark, then resets."""
    calls: list[list[str]] = []
    resets: list[object] = []

    class Done:
        returncode = 0
        stdout = ""

    def runner(cmd: list[str], _input: object) -> Done:
        calls.append(cmd)
        return Done()

    watch = _watch(policy_for("protect"))
    cut = next(o.cut for o in watch.feed(_frames(SMUGGLE)) if o.cut is not None)
    assert DriftCutter(None, resets.append, runner)(cut)
    assert calls[0][:2] == ["conntrack", "-U"] and "10.1.0.1" in calls[0] and "8080" in calls[0]
    assert len(resets) == 1


def test_a_failing_threat_engine_does_not_stop_the_drift_watch() -> None:
    """A batch the threat engine fails on is logged and lost to it; the loop goes on with the next."""
    import threading
    from collections.abc import Iterator
    from typing import Any

    from podwall.enforce.drift import DriftWatcher, run_drift_watch

    policy = policy_for("protect")
    real = _watch(policy)
    stop = threading.Event()

    class Tap:
        closed = False

        def batches(self, timeout: float = 0.5) -> Iterator[list[Frame]]:
            yield _frames(SMUGGLE)
            stop.set()
            yield _frames(SMUGGLE)

        def close(self) -> None:
            self.closed = True

    class Failing:
        def feed(self, frames: object) -> list[object]:
            raise RuntimeError("a bug")

    watches: list[Any] = [Failing(), real]
    got: list[Any] = []
    tap = Tap()
    run_drift_watch(
        DriftWatcher(PolicyEngine(policy), real.resolver), tap, None, got.extend, stop=stop,
        threats=lambda: watches.pop(0),
    )  # fmt: skip
    assert tap.closed and any(e.detection is not None and "smuggling" in e.detection.id for e in got)
