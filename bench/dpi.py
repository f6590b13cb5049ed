"""Benchmark: DPI cost. Packets per second over the corpus captures with podwall's DPI at both
depths and off, and nfstream (nDPI, 20 dissection packets) on the same file in the same run,
with the ratios.

The DPI depths (see podwall/dpi/session.py): `detect` stops parsing a flow once its
application and identifying fields (server name, first request and response) are known, or
after `Limits.dpi_max_packets` payload chunks, as nDPI stops dissecting a classified flow
after at most `n_dissections` packets; `full` parses every message of every flow (what L7
policy and the inspectors need). The goal (podwall >= 1.0x nfstream) is judged on `detect`,
the like-for-like comparison; `full` is shown for what it costs.

Input: the corpus captures concatenated into one Ethernet pcap, `--repeat` times (see
bench/corpus.py). Rounds are interleaved so noise on the shared machine hits every variant
alike; each variant's figure is its best round. Not a test: it prints.

    .venv/bin/python bench/dpi.py [--rounds 3] [--repeat 20] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from corpus import DEFAULT_CORPUS, captures, concatenate, run_nfstream, run_podwall

VARIANTS: dict[str, Callable[[Path], tuple[int, int, float]]] = {
    "dpi detect": lambda path: run_podwall(path, dpi=True, depth="detect"),
    "dpi full": lambda path: run_podwall(path, dpi=True, depth="full"),
    "dpi off": lambda path: run_podwall(path, dpi=False),
    "nfstream": run_nfstream,
}


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20, help="how many times the corpus is concatenated")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()
    files = captures(args.corpus)
    if not files:
        sys.exit(f"no captures under {args.corpus}/dpi: set --corpus or PODWALL_CORPUS")
    best = dict.fromkeys(VARIANTS, float("inf"))
    packets: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="podwall-bench-") as tmp:
        path = Path(tmp) / "corpus-concatenated.pcap"
        frames = concatenate(files, args.repeat, path)
        print(f"{len(files)} corpus captures x {args.repeat} -> {frames} frames; {args.rounds} rounds, best of each")
        for _ in range(args.rounds):
            for name, run in VARIANTS.items():
                n, _flows, seconds = run(path)
                packets[name] = n
                best[name] = min(best[name], seconds)
    pps = {name: packets[name] / best[name] for name in best}
    for name in best:
        print(f"{name:10}: {packets[name]:>8} packets {best[name]:8.3f} s {pps[name]:>10,.0f} packets/s")
    nf = pps["nfstream"]
    print(
        f"ratios to nfstream: DPI detect {pps['dpi detect'] / nf:.2f} (the goal, >= 1.0: nDPI also stops "
        f"after detection); DPI full {pps['dpi full'] / nf:.2f}; DPI off {pps['dpi off'] / nf:.2f}"
    )
    off = pps["dpi off"]
    print(f"ratios to DPI off: detect {pps['dpi detect'] / off:.2f}; full {pps['dpi full'] / off:.2f}")


if __name__ == "__main__":
    main()
