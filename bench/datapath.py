"""Benchmark: what the enforcer costs on the data path, in a lab it brings up itself.

Two pods on the lab's bridge, `client` and `server`; the node namespace between them holds the
enforcer. Each mode is paired with a no-firewall run in the same round (baseline first, then
the mode), and the ratio of the two is what counts:

  (a) no firewall (paired with itself: the ratio shows the noise);
  (b) L3/L4: `build_plan` + `Enforcer.apply` of a policy allowing client -> server by port;
  (c) L7 decide-once: the rule allows client -> server only for `applications: [http]`, so
      the connection's payload packets are queued (NFQUEUE; its handshake is not) until the
      worker's DPI names it on the first payload; the allow mark then keeps the rest of it in
      the kernel;
  (d) every payload packet in userspace: the same rule with an `l7` HTTP matcher, so the
      worker judges each request and never gives the connection the allow mark;
  (e) passive tap: no rules; `run_monitor` reads the pod veths (AF_PACKET) in the background,
      at idle CPU priority as `podwall monitor` does;
  (q) only when asked (`--modes q`): (c)'s ruleset with a stand-in worker that allows every
      queued packet without decoding it: what the queue's round trip alone costs here, the
      floor under (c);
  (r) only when asked (`--modes r`): (d)'s ruleset with a stand-in worker that accepts every
      queued packet unseen, without the allow mark, so every payload packet keeps coming to
      userspace: what the queue alone costs for (d), the floor under it;
  (p) only when asked (`--modes p`): (c) with workers that busy-poll their queue for up to
      BUSY_POLL_US after each packet (`podwall enforce --busy-poll-us`) instead of sleeping.

Measurements, from the client pod to the server pod: single-stream throughput and new
connections per second (a sequential Python client; each connection sends one HTTP request,
reads the answer and closes with SO_LINGER 0, so no TIME_WAIT piles up). Throughput uses
`iperf3 -J` for (a), (b), (e). iperf3's streams carry no protocol the DPI knows, so a rule
that allows by application would deny them: (c) and (d) use a Python HTTP stream instead
(one `POST` with a huge Content-Length, then bulk body bytes; the receiver reports what it
got), and their paired baseline uses the same stream. The workers (one per queue of
`QueueConfig`, fail-closed so nothing bypasses them) and the monitor run as background
processes inside the node namespace; their counters are printed after the table. Each round's
line shows the machine's load average and CPU pressure: the ratios assume nothing else runs.

    sudo /tmp/pwvenv/bin/python bench/datapath.py [--rounds 2] [--seconds 5] [--modes a,b,c,d,e]

Not a test: it prints. Needs root, ip, nft, iptables-nft and iperf3. The lab has a unique name
and a temp state dir and is always taken down, also on Ctrl-C or an error.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

IPERF_PORT = 5201
STREAM_PORT = 8080
ANSWER_PORT = 9000
BUSY_POLL_US = 200  # mode (p)'s workers
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 15.0

SPEC = """\
apiVersion: podwall.io/v1
kind: Lab
name: {name}
podCIDR: 10.88.0.0/24
serviceCIDR: 10.89.0.0/24
namespaces: [{{name: bench}}]
pods:
  - {{name: client, namespace: bench, labels: {{app: client}}, server: none}}
  - {{name: server, namespace: bench, labels: {{app: server}}, server: none}}
"""

ROLES = str(Path(__file__).resolve().with_name("datapath_roles.py"))  # what runs in the pods
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Mode:
    key: str
    title: str
    tool: str  # throughput tool: "iperf3" or "http" (the Python HTTP stream)
    throughput_goal: float | None = None
    connections_goal: float | None = None


MODES = {
    "a": Mode("a", "no firewall", "iperf3"),
    "b": Mode("b", "L3/L4 nftables", "iperf3"),
    "c": Mode("c", "L7 decide-once", "http", 0.95, 0.75),
    "d": Mode("d", "every payload packet in userspace", "http", 0.5),
    "e": Mode("e", "passive tap", "iperf3", 0.9),
    # Not run by default: (c)'s ruleset with a worker that allows every queued packet unseen, i.e.
    # what the queue's round trip alone costs on this machine (the floor under (c)).
    "q": Mode("q", "decide-once, queue only (allow-all)", "http"),
    # Not run by default: (d)'s ruleset with a stand-in worker that accepts every queued packet
    # unseen and without the allow mark, so each payload packet keeps coming: the floor under (d).
    "r": Mode("r", "every packet queued, accepted unseen", "http"),
    # Not run by default: (c) with workers that busy-poll their queue (`podwall enforce
    # --busy-poll-us`) instead of sleeping between packets.
    "p": Mode("p", f"L7 decide-once, busy poll {BUSY_POLL_US} us", "http", 0.95, 0.75),
}
DEFAULT_MODES = ["a", "b", "c", "d", "e"]


class BenchError(Exception):
    """A measurement or a background process failed; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Policies


def _policy(name: str, rule: dict[str, Any]) -> dict[str, Any]:
    groups = [{"name": g, "criteria": [{"key": "app", "op": "=", "value": g}]} for g in ("client", "server")]
    base = {"id": 1, "from": "client", "to": "server"}
    return {
        "apiVersion": "podwall.io/v1",
        "kind": "Policy",
        "metadata": {"name": name},
        "spec": {"defaultMode": "protect", "groups": groups, "rules": [{**base, **rule}]},
    }


PORTS = [f"tcp/{IPERF_PORT}", f"tcp/{STREAM_PORT}", f"tcp/{ANSWER_PORT}"]
POLICIES = {
    "b": _policy("bench-l34", {"ports": PORTS}),
    "c": _policy("bench-decide-once", {"ports": PORTS, "applications": ["http"]}),
    "d": _policy(
        "bench-per-request",
        {
            "ports": PORTS,
            "applications": ["http"],
            "l7": {"http": {"methods": ["GET", "POST"], "paths": [{"prefix": "/"}]}},
        },
    ),
}
POLICIES["e"] = POLICIES["b"]  # the monitor judges by the L3/L4 policy: no violations, full DPI
POLICIES["q"] = POLICIES["p"] = POLICIES["c"]
POLICIES["r"] = POLICIES["d"]


# ---------------------------------------------------------------------------------------------
# Background processes


@dataclass
class Background:
    """A process started in its own session (Ctrl-C reaches only the bench, which stops it)."""

    name: str
    proc: subprocess.Popen[str]
    log: Path
    output: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log: Path, ready: bool) -> Background:
        with open(log, "ab") as err:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if ready else subprocess.DEVNULL,
                stderr=err,
                text=True,
                start_new_session=True,
            )
        bg = cls(name, proc, log)
        if ready:
            try:
                bg._wait_ready()
            except BaseException:
                bg.stop()
                raise
        return bg

    def _tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-8:])
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        out = self.proc.stdout
        assert out is not None
        sel = selectors.DefaultSelector()
        sel.register(out, selectors.EVENT_READ)
        try:
            if not sel.select(READY_TIMEOUT):
                raise BenchError(f"{self.name}: not ready after {READY_TIMEOUT:.0f} s; log:\n{self._tail()}")
            line = out.readline().strip()
        finally:
            sel.close()
        if line != "ready":
            self.proc.wait(5)
            raise BenchError(f"{self.name}: failed to start (exit {self.proc.returncode}); log:\n{self._tail()}")

    def stop(self) -> dict[str, Any] | None:
        """SIGTERM, wait (SIGKILL after a while); returns the JSON the process printed last, if any."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest = self.proc.communicate(timeout=STOP_TIMEOUT)[0] if self.proc.stdout else None
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        for line in reversed((rest or "").splitlines()):
            if line.startswith("{"):
                result: dict[str, Any] = json.loads(line)
                return result
        return None


def _listening(pid: int, port: int) -> bool:
    """Whether the network namespace of `pid` has a TCP socket listening on `port`."""
    lines: list[str] = []
    for table in ("tcp", "tcp6"):  # iperf3 listens on a dual-stack IPv6 socket
        with contextlib.suppress(OSError):
            lines += Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
    return any(c[3] == "0A" and int(c[1].rsplit(":", 1)[1], 16) == port for c in (line.split() for line in lines))


# ---------------------------------------------------------------------------------------------
# The bench


@dataclass
class Sample:
    throughput: float  # MB/s (10^6 bytes)
    connections: float  # per second
    connection_errors: int


@dataclass
class Pair:
    base: Sample
    mode: Sample


class Bench:
    """The lab, its servers, the enforcer and the measurements."""

    def __init__(self, state: Any, root: Path, seconds: float, profile: Path | None = None) -> None:
        from podwall.enforce.apply import Enforcer
        from podwall.enforce.iptables import QueueConfig
        from podwall.inventory.loader import load_inventory
        from podwall.lab.cluster import resolve_pod

        self.state = state
        self.root = root
        self.seconds = seconds
        self.profile = profile
        self.setups = 0
        self.server_ip = resolve_pod(state, "server").ips[0]
        self.inventory = load_inventory([state.inventory])
        # Fail-closed: a queued packet no worker takes is dropped, so nothing is measured unchecked.
        self.queue = QueueConfig(fail_open=False)
        self.enforcer = Enforcer(state.node_netns, self.queue)
        self.servers: list[Background] = []
        self.helpers: list[Background] = []
        self.diagnostics: dict[str, list[dict[str, Any]]] = {}
        self.policy_files: dict[str, Path] = {}
        for key, doc in POLICIES.items():
            path = root / f"policy-{key}.json"
            path.write_text(json.dumps(doc), encoding="utf-8")
            self.policy_files[key] = path

    def _pod(self, pod: str, argv: Sequence[str]) -> list[str]:
        from podwall.lab.cluster import pod_command

        return pod_command(self.state, pod, list(argv))

    def start_servers(self) -> None:
        programs = {
            IPERF_PORT: ["iperf3", "-s", "-p", str(IPERF_PORT)],
            STREAM_PORT: [sys.executable, ROLES, "_sink", str(STREAM_PORT)],
            ANSWER_PORT: [sys.executable, ROLES, "_answer", str(ANSWER_PORT)],
        }
        for port, argv in programs.items():
            log = self.root / f"server-{port}.log"
            bg = Background.start(f"server :{port}", self._pod("server", argv), log, ready=False)
            self.servers.append(bg)
            deadline = time.monotonic() + READY_TIMEOUT
            while not _listening(bg.proc.pid, port):
                if bg.proc.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"{argv[0]} on port {port} did not start; log:\n{bg._tail()}")
                time.sleep(0.05)

    # -- measurements ----------------------------------------------------------------------

    def _client(self, argv: Sequence[str], what: str) -> str:
        from podwall.lab.cluster import exec_in_pod

        done = exec_in_pod(self.state, "client", argv, timeout=self.seconds + 60, capture=True)
        if done.returncode != 0:
            raise BenchError(f"{what} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-800:]}")
        return done.stdout

    def throughput(self, tool: str) -> float:
        secs = f"{self.seconds:g}"
        if tool == "iperf3":
            out = self._client(["iperf3", "-c", self.server_ip, "-p", str(IPERF_PORT), "-t", secs, "-J"], "iperf3")
            data = json.loads(out)
            if "error" in data:
                raise BenchError(f"iperf3: {data['error']}")
            got = data["end"]["sum_received"]
            return float(got["bytes"]) / float(got["seconds"]) / 1e6
        out = self._client([sys.executable, ROLES, "_stream", self.server_ip, str(STREAM_PORT), secs], "HTTP stream")
        data = json.loads(out)
        return float(data["bytes"]) / float(data["seconds"]) / 1e6

    def connections(self) -> tuple[float, int]:
        secs = f"{self.seconds:g}"
        out = self._client([sys.executable, ROLES, "_connect", self.server_ip, str(ANSWER_PORT), secs], "connections")
        data = json.loads(out)
        return data["connections"] / data["seconds"], int(data["errors"])

    def sample(self, tool: str) -> Sample:
        mbps = self.throughput(tool)
        rate, errors = self.connections()
        return Sample(mbps, rate, errors)

    # -- modes -----------------------------------------------------------------------------

    def setup(self, key: str) -> None:
        from podwall.enforce.plan import build_plan
        from podwall.policy.model import Policy

        if key in ("b", "c", "d", "q", "p", "r"):
            self.enforcer.apply(build_plan(Policy.model_validate(POLICIES[key]), self.inventory))
        self.setups += 1
        if key in ("c", "d", "q", "p", "r"):
            for num in self.queue.numbers:
                if key in ("q", "r"):
                    argv = [sys.executable, ROLES, "_allow_all", str(num), "mark" if key == "q" else "none"]
                else:
                    policy = str(self.policy_files[key])
                    argv = [sys.executable, ROLES, "_worker", str(num), policy, self.state.inventory]
                    argv.append(self._profile_path(f"{key}-worker{num}"))
                    argv.append(str(BUSY_POLL_US if key == "p" else 0))
                argv = ["ip", "netns", "exec", self.state.node_netns, *argv]
                self.helpers.append(Background.start(f"worker {num}", argv, self.root / f"worker-{num}.log", True))
        if key == "e":
            argv = [sys.executable, ROLES, "_tap", str(self.root), self.state.lab, str(self.policy_files["e"])]
            argv.append(self._profile_path("e-monitor"))
            self.helpers.append(Background.start("monitor", argv, self.root / "monitor.log", True))

    def _profile_path(self, what: str) -> str:
        return str(self.profile / f"{what}-{self.setups}.prof") if self.profile is not None else ""

    def teardown(self, key: str | None = None) -> None:
        helpers, self.helpers = self.helpers, []
        for bg in helpers:
            stats = bg.stop()
            if key is not None and stats is not None:
                self.diagnostics.setdefault(key, []).append({"process": bg.name, **stats})
        self.enforcer.remove()

    def pair(self, mode: Mode) -> Pair:
        self.teardown()
        base = self.sample(mode.tool)
        self.setup(mode.key)
        try:
            got = self.sample(mode.tool)
        finally:
            self.teardown(mode.key)
        return Pair(base, got)

    def close(self) -> None:
        try:
            self.teardown()
        finally:
            for bg in self.servers:
                bg.stop()


# ---------------------------------------------------------------------------------------------
# Report


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _goal(ratio: float, goal: float | None) -> str:
    if goal is None:
        return ""
    return f">= {goal:.2f} {'met' if ratio >= goal else 'MISSED'}"


def report(results: dict[str, list[Pair]], seconds: float) -> None:
    print()
    print(f"means over rounds of {seconds:g} s runs; ratio = mode / its paired no-firewall run, per round in brackets")
    head = (
        f"{'mode':38} {'tool':6} {'MB/s':>7} {'base':>7} {'ratio':>5} {'rounds':13} {'goal':14}"
        f" {'conn/s':>7} {'base':>7} {'ratio':>5} {'rounds':13} {'goal':14}"
    )
    print(head)
    print("-" * len(head))
    for key, pairs in results.items():
        mode = MODES[key]
        tp, tb = _mean([p.mode.throughput for p in pairs]), _mean([p.base.throughput for p in pairs])
        cp, cb = _mean([p.mode.connections for p in pairs]), _mean([p.base.connections for p in pairs])
        tr, cr = tp / tb if tb else 0.0, cp / cb if cb else 0.0
        t_rounds = "[" + " ".join(f"{p.mode.throughput / p.base.throughput:.2f}" for p in pairs) + "]"
        c_rounds = "[" + " ".join(f"{p.mode.connections / p.base.connections:.2f}" for p in pairs) + "]"
        print(
            f"({key}) {mode.title:34} {mode.tool:6} {tp:7.0f} {tb:7.0f} {tr:5.2f} {t_rounds:13} "
            f"{_goal(tr, mode.throughput_goal):14} {cp:7.0f} {cb:7.0f} {cr:5.2f} {c_rounds:13} "
            f"{_goal(cr, mode.connections_goal):14}"
        )
        errors = sum(p.mode.connection_errors + p.base.connection_errors for p in pairs)
        if errors:
            print(f"    ({errors} failed connections in these runs)")


def report_diagnostics(diagnostics: dict[str, list[dict[str, Any]]]) -> None:
    if not diagnostics:
        return
    print()
    print("background processes (summed over rounds):")
    for key, runs in diagnostics.items():
        totals: dict[str, int] = {}
        for run in runs:
            flat = {**run, **(run.get("queue") or run.get("tap") or {})}
            for name, value in flat.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    totals[name] = totals.get(name, 0) + value
        keep = {k: v for k, v in totals.items() if v}
        print(f"  ({key}) " + ", ".join(f"{k} {v}" for k, v in keep.items()))


# ---------------------------------------------------------------------------------------------
# Main


def _load() -> str:
    """The machine's recent load, to tell a round disturbed by other work (the ratios assume an idle box)."""
    try:
        avg1 = Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        avg1 = "?"
    try:
        some = Path("/proc/pressure/cpu").read_text().split()[1].split("=")[1]
    except (OSError, IndexError):
        some = "?"
    return f"load {avg1}, cpu pressure {some}%"


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _modes(text: str) -> list[str]:
    keys = [k.strip().lower().strip("()") for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODES]
    if bad or not keys:
        raise argparse.ArgumentTypeError(f"unknown modes {', '.join(bad) or '(none)'}; choose from {','.join(MODES)}")
    return list(dict.fromkeys(keys))


def _preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/datapath.py needs root (network namespaces, nftables, NFQUEUE)")
    missing = [p for p in ("ip", "nft", "iptables-restore", "iperf3") if shutil.which(p) is None]
    if missing:
        sys.exit(f"missing programs: {', '.join(missing)} (./dev setup installs them)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2, help="pairs per mode (default 2)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument(
        "--modes",
        type=_modes,
        default=DEFAULT_MODES,
        help="comma-separated subset of a,b,c,d,e (q, r: the queue alone for c, d; p: (c) busy-polling)",
    )
    ap.add_argument("--profile", type=Path, help="write cProfile statistics of the workers and the monitor here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.seconds <= 0:
        ap.error("--rounds must be at least 1 and --seconds positive")
    _preflight()

    from podwall.lab.cluster import lab_down, lab_up
    from podwall.lab.spec import parse_lab

    signal.signal(signal.SIGTERM, _interrupt)
    root = Path(tempfile.mkdtemp(prefix="podwall-bench-"))
    root.chmod(0o711)
    name = "bd" + secrets.token_hex(4)
    bench: Bench | None = None
    results: dict[str, list[Pair]] = {k: [] for k in args.modes}
    try:
        started = time.monotonic()
        state = lab_up(parse_lab(SPEC.format(name=name), "bench-lab.yaml"), root)
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
        bench = Bench(state, root, args.seconds, args.profile.resolve() if args.profile else None)
        bench.start_servers()
        print(
            f"lab {name}: client {state.pods[0].ips[0]} -> server {bench.server_ip}; "
            f"{args.rounds} rounds of modes {','.join(args.modes)}",
            flush=True,
        )
        for r in range(args.rounds):
            for key in args.modes:
                pair = bench.pair(MODES[key])
                results[key].append(pair)
                print(
                    f"  round {r + 1} ({key}): {MODES[key].tool} {pair.base.throughput:.0f} -> "
                    f"{pair.mode.throughput:.0f} MB/s, "
                    f"{pair.base.connections:.0f} -> {pair.mode.connections:.0f} conn/s; {_load()}",
                    flush=True,
                )
        report(results, args.seconds)
        report_diagnostics(bench.diagnostics)
        print(f"\ntotal {time.monotonic() - started:.0f} s")
        return 0
    except KeyboardInterrupt:
        print("interrupted; taking the lab down", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C (or a SIGTERM) must not leave the lab behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if bench is not None:
                bench.close()
        finally:
            lab_down(name, root)
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
