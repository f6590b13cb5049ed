"""Regenerate the bundled demo captures: `python -m podwall.demo.generate [OUTDIR]`.

The demo is NeuVector's demo application: external clients and the kubelet reach `nginx`
over HTTP, `nginx` calls `node` over HTTP on 8888, `node` keeps its state in `redis`, every
pod resolves names through the cluster DNS service, and `node` calls an external API over
TLS. `normal.pcapng` holds only that traffic; `exploit.pcapng` holds the same plus what an
intruder does: the `exploit` pod resolves and talks to redis directly and probes `node`'s
API, and a compromised `node` pod speaks HTTP to the redis port. The output is
byte-for-byte deterministic.
"""

from __future__ import annotations

import sys
from pathlib import Path

from podwall.datapath.io.pcapwriter import PcapngWriter
from podwall.lab import payloads as p
from podwall.lab.synth import Capture, ping, tcp_exchange, udp_exchange

T0 = 1_795_000_000.0  # 2026-11-18 UTC: a fixed start keeps the captures reproducible

NGINX = "10.244.1.10"
NODE_A, NODE_B = "10.244.1.20", "10.244.2.21"
REDIS = "10.244.2.30"
EXPLOIT = "10.244.1.66"
KUBE_DNS = "10.96.0.10"
NODE_SVC = "10.96.0.50"
KUBELET = "192.168.56.11"
INTERNET_CLIENT = "203.0.113.7"
EXTERNAL_API = "198.51.100.20"

EXPECTED_VIOLATIONS = {
    # (client group, server group, server port, application) of each violation in exploit.pcapng
    ("nv.exploit.demo", "nv.coredns.kube-system", 53, "dns"),
    ("nv.exploit.demo", "nv.redis.demo", 6379, "redis"),
    ("nv.exploit.demo", "nv.node.demo", 8888, "http"),
    ("nv.node.demo", "nv.redis.demo", 6379, "http"),
}


def _dns(cap: Capture, client: str, port: int, t: float, ident: int, name: str, answer: str) -> None:
    cap.extend(
        udp_exchange(client, port, KUBE_DNS, 53, t, p.dns_query(ident, name), p.dns_response(ident, name, [answer]))
    )


def normal_traffic(cap: Capture, base: float) -> None:
    """Ten minutes of the application doing its job."""
    cport = 40000
    for i in range(6):
        t = base + i * 60
        # The internet reaches the web front end.
        page = b"<html><body><h1>Demo shop</h1></body></html>"
        cap.extend(
            tcp_exchange(
                INTERNET_CLIENT,
                51000 + i,
                NGINX,
                80,
                t,
                [(p.http_request("GET", "/", "shop.example.com"), p.http_response(200, page))],
                isn=7000 + i,
            )
        )
        # The kubelet probes nginx.
        cap.extend(
            tcp_exchange(
                KUBELET,
                52000 + i,
                NGINX,
                80,
                t + 5,
                [
                    (
                        p.http_request("GET", "/healthz", f"{NGINX}:80", user_agent="kube-probe/1.29"),
                        p.http_response(200, b"ok", "text/plain"),
                    )
                ],
            )
        )
        # nginx resolves and calls the node API through its service address.
        _dns(cap, NGINX, 33000 + i, t + 0.1, 0x1000 + i, "node.demo.svc.cluster.local", NODE_SVC)
        body = b'{"items": [1, 2, 3]}'
        cap.extend(
            tcp_exchange(
                NGINX,
                cport + i,
                NODE_SVC,
                8888,
                t + 0.2,
                [
                    (
                        p.http_request("GET", f"/api/items?page={i}", "node.demo.svc.cluster.local:8888"),
                        p.http_response(200, body, "application/json", server="node"),
                    )
                ],
                isn=9000 + i,
            )
        )
        # Each node replica resolves redis and uses it.
        for n, node_ip in enumerate((NODE_A, NODE_B)):
            _dns(
                cap,
                node_ip,
                34000 + 10 * i + n,
                t + 0.3,
                0x2000 + 10 * i + n,
                "redis.demo.svc.cluster.local",
                REDIS,
            )
            cap.extend(
                tcp_exchange(
                    node_ip,
                    45000 + 10 * i + n,
                    REDIS,
                    6379,
                    t + 0.4 + n,
                    [
                        (p.resp_command("INCR", "visits"), b":%d\r\n" % (i + 1)),
                        (p.resp_command("GET", f"item:{i}"), b"$5\r\napple\r\n"),
                        (p.resp_command("SET", f"session:{i}", "active", "EX", "300"), b"+OK\r\n"),
                    ],
                    isn=11000 + 10 * i + n,
                )
            )
    # node calls an external API over TLS once.
    _dns(cap, NODE_A, 35000, base + 30, 0x3000, "api.payments.example", EXTERNAL_API)
    cap.extend(
        tcp_exchange(
            NODE_A,
            46000,
            EXTERNAL_API,
            443,
            base + 30.1,
            [
                (p.tls_client_hello("api.payments.example", ["h2", "http/1.1"]), p.tls_server_hello("h2")),
                (b"\x17\x03\x03\x00\x30" + bytes(48), b"\x17\x03\x03\x00\x50" + bytes(80)),
            ],
        )
    )
    # The kubelet pings nodes' pods for reachability (ICMP).
    cap.extend(ping(KUBELET, NODE_A, base + 45, count=3))


def exploit_traffic(cap: Capture, base: float) -> None:
    """What an intruder does from inside the cluster."""
    _dns(cap, EXPLOIT, 36000, base, 0x6666, "redis.demo.svc.cluster.local", REDIS)
    cap.extend(
        tcp_exchange(
            EXPLOIT,
            47000,
            REDIS,
            6379,
            base + 0.2,
            [
                (p.resp_command("KEYS", "*"), b"*2\r\n$6\r\nvisits\r\n$6\r\nitem:0\r\n"),
                (p.resp_command("CONFIG", "GET", "dir"), b"*2\r\n$3\r\ndir\r\n$5\r\n/data\r\n"),
            ],
        )
    )
    cap.extend(
        tcp_exchange(
            EXPLOIT,
            47001,
            NODE_SVC,
            8888,
            base + 1,
            [
                (
                    p.http_request("GET", "/api/admin/users", "node.demo.svc.cluster.local:8888"),
                    p.http_response(403, b"forbidden", "text/plain", server="node"),
                )
            ],
        )
    )
    # A compromised node pod abuses its allowed path to redis with another protocol.
    cap.extend(
        tcp_exchange(
            NODE_B,
            47002,
            REDIS,
            6379,
            base + 2,
            [
                (
                    p.http_request("POST", "/", "redis:6379", body=b'{"cmd": "FLUSHALL"}'),
                    b"-ERR unknown command 'POST'\r\n",
                )
            ],
        )
    )


def write(path: Path, cap: Capture) -> None:
    with PcapngWriter(path, linktype=1) as writer:
        for ts, frame in cap.sorted():
            writer.write(ts, frame)


def generate(outdir: Path) -> tuple[Path, Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    normal = Capture()
    normal_traffic(normal, T0)
    exploit = Capture()
    normal_traffic(exploit, T0)
    exploit_traffic(exploit, T0 + 200)
    normal_path, exploit_path = outdir / "normal.pcapng", outdir / "exploit.pcapng"
    write(normal_path, normal)
    write(exploit_path, exploit)
    return normal_path, exploit_path


def main() -> None:
    outdir = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).parent
    for path in generate(outdir):
        print(path)


if __name__ == "__main__":
    main()
