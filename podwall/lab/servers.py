"""How each lab server kind is configured and started inside its pod.

`prepare_server` writes the server's files into the pod's state dir (configs, data dirs,
PostgreSQL's initdb) and returns a `Launch`: the command to run inside the pod's network
namespace, what to wait for before calling it ready, and the signal that stops it cleanly.
`missing_programs` lets `lab up` refuse early, naming every program that is not installed.
"""

from __future__ import annotations

import glob
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import podwall
from podwall.lab.plan import LabPlan, PodPlan
from podwall.lab.spec import DnsServer, HttpServer, NginxServer, PostgresServer, RedisServer


class ServerError(Exception):
    """A server could not be prepared or started (message says which pod and why)."""


@dataclass(frozen=True, slots=True)
class Launch:
    argv: list[str]
    ready: tuple[str, int]  # ("tcp" | "udp", port) that must be listening in the pod
    stop_signal: int
    env: dict[str, str]


def _postgres_bin(program: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"), key=lambda p: int(p.split("/")[4]))
    return found[-1] if found else None


def _program(kind: str) -> tuple[str, str | None]:
    """The program a server kind needs, and where it is (None when missing)."""
    if kind == "redis":
        return "redis-server", shutil.which("redis-server")
    if kind == "nginx":
        return "nginx", shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if kind == "postgresql":
        return "postgres (Debian package postgresql)", _postgres_bin("postgres")
    if kind == "dnsmasq":
        return "dnsmasq", shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin")
    return kind, sys.executable


def missing_programs(plan: LabPlan) -> list[str]:
    """Each program that a pod's server needs and this machine lacks, with the pods that need it."""
    need: dict[str, list[str]] = {}
    for pod in plan.pods:
        if pod.server.kind == "none":
            continue
        name, path = _program(pod.server.kind)
        if path is None:
            need.setdefault(name, []).append(pod.name)
    if any(p.server.kind == "postgresql" for p in plan.pods) and shutil.which("setpriv") is None:
        need.setdefault("setpriv (util-linux)", []).append("postgresql pods")
    return [f"{name} (for {', '.join(pods)})" for name, pods in need.items()]


def _nginx_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _nginx_conf(server: NginxServer, pod: PodPlan, d: Path) -> str:
    listen = [f"listen {server.port};"] + ([f"listen [::]:{server.port};"] if pod.ipv6 is not None else [])
    temp = "\n".join(f"    {k}_temp_path {d}/tmp/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    proxies = "".join(
        f"        location {path} {{ proxy_pass {url}; proxy_set_header Host $host; }}\n"
        for path, url in server.proxy.items()
    )
    return (
        "daemon off;\nmaster_process on;\nworker_processes 1;\n"
        f"pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        f"    access_log {d}/access.log;\n{temp}\n"
        "    server {\n"
        + "".join(f"        {line}\n" for line in listen)
        + f"        location / {{ default_type text/plain; return 200 {_nginx_string(server.body)}; }}\n"
        + proxies
        + "    }\n}\n"
    )


def _as_postgres(argv: list[str]) -> list[str]:
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", *argv]


def _prepare_postgres(server: PostgresServer, pod: PodPlan, d: Path) -> Launch:
    postgres, initdb = _postgres_bin("postgres"), _postgres_bin("initdb")
    if postgres is None or initdb is None:
        raise ServerError(f"pod {pod.name}: PostgreSQL is not installed (Debian package postgresql)")
    user = pwd.getpwnam("postgres")
    data, sock = d / "pgdata", d / "pgsock"
    for path in (data, sock):
        path.mkdir(mode=0o700, exist_ok=True)
        os.chown(path, user.pw_uid, user.pw_gid)
    probe = subprocess.run(_as_postgres(["test", "-w", str(data)]), capture_output=True)
    if probe.returncode != 0:
        raise ServerError(
            f"pod {pod.name}: the postgres user cannot reach {data}; use a lab state dir whose parents "
            "others may traverse (mode o+x), such as the default /run/podwall/lab"
        )
    init = subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C", "-N"]),
        capture_output=True,
        text=True,
    )
    if init.returncode != 0:
        raise ServerError(f"pod {pod.name}: initdb failed: {init.stderr.strip()[-500:]}")
    with open(data / "pg_hba.conf", "a", encoding="utf-8") as f:
        f.write("host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n")  # a lab: every pod may connect
    argv = [
        postgres, "-D", str(data), "-p", str(server.port), "-c", "listen_addresses=*",
        "-c", f"unix_socket_directories={sock}", "-c", "fsync=off", "-c", "shared_buffers=16MB",
    ]  # fmt: skip
    return Launch(_as_postgres(argv), ("tcp", server.port), signal.SIGINT, {})


def prepare_server(plan: LabPlan, pod: PodPlan, pod_dir: Path) -> Launch | None:
    """Write the server's files into `pod_dir` and say how to start it; None for `server: none`."""
    s = pod.server
    if isinstance(s, RedisServer):
        bind = ["0.0.0.0", "::"] if pod.ipv6 is not None else ["0.0.0.0"]
        argv = ["redis-server", "--port", str(s.port), "--bind", *bind, "--save", "", "--appendonly", "no"]
        argv += ["--daemonize", "no", "--protected-mode", "no", "--dir", str(pod_dir), "--logfile", ""]
        return Launch(argv, ("tcp", s.port), signal.SIGTERM, {})
    if isinstance(s, NginxServer):
        (pod_dir / "tmp").mkdir(exist_ok=True)
        conf = pod_dir / "nginx.conf"
        conf.write_text(_nginx_conf(s, pod, pod_dir), encoding="utf-8")
        nginx = _program("nginx")[1] or "nginx"
        return Launch([nginx, "-c", str(conf), "-p", str(pod_dir)], ("tcp", s.port), signal.SIGTERM, {})
    if isinstance(s, PostgresServer):
        return _prepare_postgres(s, pod, pod_dir)
    if isinstance(s, HttpServer):
        config = {
            "port": s.port,
            "ipv6": pod.ipv6 is not None,
            "routes": {path: r.model_dump() for path, r in s.routes.items()},
        }
        path = pod_dir / "http.json"
        path.write_text(json.dumps(config, indent=2), encoding="utf-8")
        root = str(Path(podwall.__file__).resolve().parents[1])
        env = {"PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        argv = [sys.executable, "-u", "-m", "podwall.lab.services.http_service", str(path)]
        return Launch(argv, ("tcp", s.port), signal.SIGTERM, env)
    if isinstance(s, DnsServer):
        hosts = pod_dir / "lab-hosts"
        hosts.write_text(plan.lab_hosts_text(), encoding="utf-8")
        argv = [
            _program("dnsmasq")[1] or "dnsmasq",
            "--keep-in-foreground",
            "--log-facility=-",
            "--conf-file=/dev/null",
        ]
        argv += ["--no-resolv", "--no-hosts", f"--addn-hosts={hosts}", "--local=/cluster.local/", f"--port={s.port}"]
        argv += ["--bind-interfaces", "--user=root", "--group=root", "--pid-file="]
        argv += [f"--listen-address={ip}" for ip in pod.ips]
        return Launch(argv, ("udp", s.port), signal.SIGTERM, {})
    return None
