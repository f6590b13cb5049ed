"""The worker's short path for a new connection's first payload: answered from the verdict cache
without a flow when an earlier connection between the same ends, with the same application and
server name, was allowed cleanly; anything else takes the full path and is judged as before."""

from __future__ import annotations

from typing import Any

import pytest

from podwall.datapath.io.nfqueue import NF_ACCEPT, NF_REPEAT
from podwall.enforce.plan import MARK_ALLOW, MARK_DENY, PKT_FIRST, PKT_QUEUED, PKT_REPLY
from podwall.enforce.worker import Decision, WorkerConfig
from podwall.lab import payloads as p
from podwall.lab.synth import TcpConversation
from podwall.policy.model import Policy
from tests.unit.enforce.worker_testkit import Rig

CLIENT, CACHE, API = "10.1.0.1", "10.1.0.9", "10.1.0.5"
FIRST = PKT_QUEUED | PKT_FIRST
ALLOW: Decision = (NF_REPEAT, MARK_ALLOW)
DENY: Decision = (NF_REPEAT, MARK_DENY)


def _policy(rules: list[dict[str, Any]], mode: str = "protect") -> Policy:
    groups = [
        {"name": f"nv.{s}.shop", "criteria": [{"key": "service", "op": "=", "value": s}], "mode": mode}
        for s in ("web", "cache", "api")
    ]
    return Policy.model_validate(
        {"metadata": {"name": "fp"}, "spec": {"defaultMode": mode, "groups": groups, "rules": rules}}
    )


REDIS = {"id": 1, "from": "nv.web.shop", "to": "nv.cache.shop", "ports": ["tcp/6379"], "applications": ["redis"]}
HTTP = {"id": 2, "from": "nv.web.shop", "to": "nv.api.shop", "ports": ["tcp/8080"], "applications": ["http"]}
HTTP_GET = {**HTTP, "l7": {"http": {"methods": ["GET"]}}}


def _rig(*rules: dict[str, Any], mode: str = "protect") -> Rig:
    rig = Rig(config=WorkerConfig.podwall())
    rig.worker.reload(_policy(list(rules), mode))
    return rig


def _first(cport: int, server: str, sport: int, payload: bytes) -> tuple[float, bytes]:
    conv = TcpConversation(CLIENT, cport, server, sport, 1.0).send(True, payload)
    (frame,) = [f for f in conv.frames if len(f[1]) > 14 + 20 + 20]  # the one carrying the payload
    return frame


def _connections(rig: Rig, server: str, sport: int, payloads: list[bytes]) -> list[Decision]:
    out: list[Decision] = []
    for i, payload in enumerate(payloads):
        out += rig.decide([_first(41000 + i, server, sport, payload)], FIRST)
    return out


def test_second_connection_is_answered_from_the_cache_and_leaves_a_record() -> None:
    """The first connection is judged in full; the next ones take the short path and a late packet
    of one of them is answered from the record it left."""
    rig = _rig(REDIS)
    ping = p.resp_command("PING")
    assert _connections(rig, CACHE, 6379, [ping, ping, ping]) == [ALLOW] * 3
    stats = rig.worker.stats
    assert stats["first_payload_cached"] == 2 and stats["allowed"] == 3 and stats["new_connections"] == 3
    assert len(rig.worker.table) == 0
    conv = TcpConversation(CLIENT, 41002, CACHE, 6379, 1.0).send(True, ping).send(False, b"+PONG\r\n")
    late = [f for f in conv.frames if len(f[1]) > 14 + 20 + 20][-1]
    assert rig.decide([late], PKT_QUEUED | PKT_REPLY) == [ALLOW]
    assert stats["sticky"] == 1


@pytest.mark.parametrize(
    ("rules", "server", "sport", "payloads", "expected", "short"),
    [
        pytest.param(
            (REDIS,),
            CACHE,
            6379,
            [p.resp_command("PING"), p.http_request("GET", "/", "api")],
            [ALLOW, DENY],
            0,
            id="other-application-is-judged-and-denied",
        ),
        pytest.param(
            (HTTP_GET,),
            API,
            8080,
            [p.http_request("GET", "/a", "api"), p.http_request("POST", "/a", "api", body=b"x=1")],
            [(NF_ACCEPT, None), DENY],  # judged per request: the GET is admitted, the connection stays queued
            0,
            id="per-request-rules-never-cached",
        ),
        pytest.param(
            (HTTP,),
            API,
            8080,
            [p.http_request("GET", "/", "a.example"), p.http_request("GET", "/", "b.example")],
            [ALLOW, ALLOW],
            0,
            id="another-server-name-is-another-key",
        ),
        pytest.param(
            (HTTP,),
            API,
            8080,
            [p.http_request("GET", "/", "a.example"), p.http_request("GET", "/x", "a.example")],
            [ALLOW, ALLOW],
            1,
            id="same-name-and-application-is-cached",
        ),
        pytest.param((), CACHE, 6379, [p.resp_command("PING")] * 2, [DENY, DENY], 0, id="denials-are-never-cached"),
    ],
)
def test_only_clean_allows_of_the_same_key_take_the_short_path(
    rules: tuple[dict[str, Any], ...],
    server: str,
    sport: int,
    payloads: list[bytes],
    expected: list[Decision],
    short: int,
) -> None:
    """A short-path answer needs the same ends, application and server name as a cached clean allow."""
    rig = _rig(*rules)
    assert _connections(rig, server, sport, payloads) == expected
    assert rig.worker.stats["first_payload_cached"] == short
    assert rig.worker.stats["denied"] == expected.count(DENY)


def test_monitor_mode_violations_are_recorded_every_time() -> None:
    """In monitor mode a violation is allowed but never cached: each connection leaves its event."""
    rig = _rig(mode="monitor")
    assert _connections(rig, CACHE, 6379, [p.resp_command("PING")] * 3) == [ALLOW] * 3
    assert len(rig.worker.take_events()) == 3 and rig.worker.stats["first_payload_cached"] == 0


def test_reload_empties_the_cache() -> None:
    """After a policy reload the next connection is judged under the new policy, not the cache."""
    rig = _rig(REDIS)
    ping = p.resp_command("PING")
    assert _connections(rig, CACHE, 6379, [ping, ping]) == [ALLOW, ALLOW]
    rig.worker.reload(_policy([]))
    assert rig.decide([_first(42000, CACHE, 6379, ping)], FIRST) == [DENY]


def test_a_split_first_request_waits_for_the_rest() -> None:
    """A first segment too short to name the application is not answered by the short path."""
    rig = _rig(HTTP)
    assert _connections(rig, API, 8080, [p.http_request("GET", "/", "api")]) == [ALLOW]
    assert rig.decide([_first(43000, API, 8080, b"GE")], FIRST) == [(NF_ACCEPT, None)]
    assert rig.worker.stats["first_payload_cached"] == 0
