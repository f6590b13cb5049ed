"""Benchmark: inspection cost. DLP throughput (MB/s) of the hyperscan engine in stream mode against the
same sensors with Python `re` (podwall/inspect/dlp/reference.py), in the same run, with the ratio.

Input: synthetic application traffic (JSON API responses, form posts, log lines, HTML) with
order numbers, timestamps, phone numbers and prices, and a card number or SSN about every
4 KB, cut into flows of `--flow-kb` KB. Hyperscan scans each flow as a stream fed 1460-byte
segments (a TCP payload), one stream per flow; `re` gets each flow whole (it cannot stream, so
this is its best case), as one alternation of all patterns (one pass) and as one pass per
pattern. All must report the same findings. Rounds are interleaved and each variant's figure
is its best round. Also printed: the cold compile and the cached load of the
built-in sensors, and WAF requests per second (ModSecurity + CRS + podwall's own layer at
paranoia 1 and 2, against parsing the same requests alone). Not a test: it prints.

    .venv/bin/python bench/inspection.py [--rounds 3] [--megabytes 8] [--flow-kb 64] [--segment 1460]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from collections.abc import Callable

from podwall.inspect.dlp import DlpEngine, builtin_sensors
from podwall.inspect.dlp.reference import ReferenceScanner
from podwall.inspect.dlp.validators import luhn_ok

CARD_PREFIXES = ("4", "51", "55", "2221", "34", "37", "6011", "65", "3528")


def _card(rng: random.Random) -> str:
    prefix = rng.choice(CARD_PREFIXES)
    length = 15 if prefix in ("34", "37") else 16
    body = prefix + "".join(rng.choice("0123456789") for _ in range(length - len(prefix) - 1))
    number = next(body + d for d in "0123456789" if luhn_ok((body + d).encode()))
    if rng.random() < 0.5:
        return number
    sep = rng.choice(" -")
    sizes = (4, 6, 5) if length == 15 else (4, 4, 4, 4)
    parts, at = [], 0
    for n in sizes:
        parts.append(number[at : at + n])
        at += n
    return sep.join(parts)


def _ssn(rng: random.Random) -> str:
    return f"{rng.randint(1, 665):03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def _record(rng: random.Random) -> str:
    order, ts = rng.randint(10**5, 10**9), 1_700_000_000 + rng.randint(0, 10**7)
    kind = rng.randrange(4)
    if kind == 0:
        return (f'{{"order":"ORD-{order}","created":{ts},"total":{rng.randint(1, 99999) / 100:.2f},'
                f'"phone":"+1 {rng.randint(200, 999)} {rng.randint(200, 999)} {rng.randint(1000, 9999)}",'
                f'"items":[{rng.randint(1, 9)},{rng.randint(10, 99)}],"status":"shipped"}}\n')  # fmt: skip
    if kind == 1:
        return f"name=Jane+Doe&zip={rng.randint(10000, 99999)}&qty={rng.randint(1, 20)}&sku=SKU-{order}&ref={ts}\n"
    if kind == 2:
        return (
            f"2024-05-{rng.randint(1, 28):02d}T12:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z INFO "
            f"request id={order} took {rng.randint(1, 999)}ms user={rng.randint(1, 10**6)} path=/api/v1/orders\n"
        )
    return f"<tr><td>Invoice INV-{order}</td><td>{rng.randint(1, 500)}.00 USD</td><td>{ts}</td></tr>\n"


def make_flows(megabytes: float, flow_kb: int, seed: int = 7) -> tuple[list[bytes], int]:
    """Synthetic flows of application text and how many sensitive values were planted in them."""
    rng = random.Random(seed)
    flows: list[bytes] = []
    planted = 0
    total = int(megabytes * 1024 * 1024)
    size = 0
    while size < total:
        parts: list[str] = []
        n = 0
        since = 0
        while n < flow_kb * 1024:
            text = _record(rng)
            since += len(text)
            if since > 4096:
                value = _card(rng) if rng.random() < 0.7 else _ssn(rng)
                text = text[:-1] + f" note={value}\n"
                planted += 1
                since = 0
            parts.append(text)
            n += len(text)
        flow = "".join(parts).encode()
        flows.append(flow)
        size += len(flow)
    return flows, planted


def hyperscan_streams(engine: DlpEngine, flows: list[bytes], segment: int) -> int:
    """Findings of the engine over each flow, one stream per flow fed `segment` bytes at a time."""
    found = 0
    for flow in flows:
        stream = engine.stream()
        for at in range(0, len(flow), segment):
            found += len(stream.feed(flow[at : at + segment]))
        found += len(stream.close())
    return found


def python_re(reference: ReferenceScanner, flows: list[bytes]) -> int:
    """Findings of the `re` reference over each whole flow."""
    return sum(len(reference.scan(flow)) for flow in flows)


WAF_REQUESTS = (
    b"GET /shop/items?id=42&sort=price HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0\r\nCookie: s=abc123\r\n\r\n",
    b"POST /login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 29\r\n\r\nuser=alice&password=s3cret%21",
    b"GET /search?q=blue+shoes&page=2 HTTP/1.1\r\nHost: shop\r\nAccept: text/html\r\n\r\n",
    b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: shop\r\n\r\n",
    b"GET /q?name=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: shop\r\n\r\n",
)


def waf_requests_per_second(rounds: int, count: int = 400) -> dict[str, float] | None:
    """Requests per second through the whole WAF (ModSecurity + CRS + podwall's layer) at paranoia 1
    and 2, and parsing alone as the baseline, on a mix of 3 ordinary requests and 2 attacks."""
    from podwall.inspect.waf import WafEngine, parse_http

    txns = [parse_http(WAF_REQUESTS[i % len(WAF_REQUESTS)]) for i in range(count)]
    engines = {f"paranoia {pl}": WafEngine(paranoia=pl) for pl in (1, 2)}
    best = {"parse only (baseline)": float("inf"), **dict.fromkeys(engines, float("inf"))}
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(count):
            parse_http(WAF_REQUESTS[i % len(WAF_REQUESTS)])
        best["parse only (baseline)"] = min(best["parse only (baseline)"], time.perf_counter() - started)
        for name, engine in engines.items():
            started = time.perf_counter()
            blocked = sum(engine.inspect(t).verdict == "block" for t in txns)
            best[name] = min(best[name], time.perf_counter() - started)
            assert blocked == 2 * count // len(WAF_REQUESTS), f"{name}: {blocked} blocked"
    return {name: count / seconds for name, seconds in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--megabytes", type=float, default=8.0, help="traffic scanned per round and variant")
    ap.add_argument("--flow-kb", type=int, default=64, help="bytes per flow (one stream each)")
    ap.add_argument("--segment", type=int, default=1460, help="bytes fed to the stream at a time (a TCP payload)")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="podwall-bench-") as cache:
        started = time.perf_counter()
        engine = DlpEngine(builtin_sensors(), cache_dir=cache)
        cold = time.perf_counter() - started
        started = time.perf_counter()
        engine = DlpEngine(builtin_sensors(), cache_dir=cache)
        warm = time.perf_counter() - started
        assert engine.compiled["stream"].status == "cached"
    per_pattern = ReferenceScanner(builtin_sensors())
    combined = ReferenceScanner(builtin_sensors(), combined=True)
    flows, planted = make_flows(args.megabytes, args.flow_kb)
    nbytes = sum(len(f) for f in flows)
    print(f"built-in sensors: compile {cold * 1000:.1f} ms, load from cache {warm * 1000:.2f} ms; "
          f"stream tail {engine.tail_bytes} bytes")  # fmt: skip
    print(f"{len(flows)} flows, {nbytes / 1e6:.1f} MB, {planted} values planted; "
          f"{args.rounds} rounds, best of each")  # fmt: skip

    variants: dict[str, Callable[[], int]] = {
        f"hyperscan stream ({args.segment} B segments)": lambda: hyperscan_streams(engine, flows, args.segment),
        "python re, one alternation": lambda: python_re(combined, flows),
        "python re, a pass per pattern": lambda: python_re(per_pattern, flows),
    }
    best = dict.fromkeys(variants, float("inf"))
    counts: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, run in variants.items():
            started = time.perf_counter()
            counts[name] = run()
            best[name] = min(best[name], time.perf_counter() - started)
    mbps = {name: nbytes / 1e6 / best[name] for name in variants}
    for name in variants:
        print(f"{name:34}: {counts[name]:>6} findings {best[name]:8.3f} s {mbps[name]:9.1f} MB/s")
    hs_name, *re_names = list(variants)
    if len({counts[name] for name in variants}) != 1:
        print(f"WARNING: the engines disagree: {counts}")
    print("ratios: " + "; ".join(f"hyperscan / {name} {mbps[hs_name] / mbps[name]:.1f}x" for name in re_names))

    waf = waf_requests_per_second(args.rounds)
    if waf is None:
        print("WAF: not measured here yet (waf_requests_per_second is the slot for it)")
    else:
        base = waf["parse only (baseline)"]
        for name, rps in waf.items():
            print(f"WAF {name:22}: {rps:>10,.0f} requests/s  ({rps / base:.3f} of parsing alone)")


if __name__ == "__main__":
    main()
