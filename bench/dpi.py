"""Benchmark: DPI cost. Packets per second over the corpus captures with podwall's DPI on and off,
and nfstream (nDPI, 20 dissection packets) on the same file in the same run, with the ratios.

Input: the corpus captures concatenated into one Ethernet pcap, `--repeat` times (see
bench/corpus.py). Rounds are interleaved so noise on the shared machine hits every variant
alike; each variant's figure is its best round. Not a test: it prints.

    .venv/bin/python bench/dpi.py [--rounds 3] [--repeat 20] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from corpus import DEFAULT_CORPUS, captures, concatenate, run_nfstream, run_podwall


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20, help="how many times the corpus is concatenated")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()
    files = captures(args.corpus)
    if not files:
        sys.exit(f"no captures under {args.corpus}/dpi: set --corpus or PODWALL_CORPUS")
    best = {"dpi on": float("inf"), "dpi off": float("inf"), "nfstream": float("inf")}
    packets: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="podwall-bench-") as tmp:
        path = Path(tmp) / "corpus-concatenated.pcap"
        frames = concatenate(files, args.repeat, path)
        print(f"{len(files)} corpus captures x {args.repeat} -> {frames} frames; {args.rounds} rounds, best of each")
        for _ in range(args.rounds):
            for name, run in (
                ("dpi on", lambda: run_podwall(path, dpi=True)),
                ("dpi off", lambda: run_podwall(path, dpi=False)),
                ("nfstream", lambda: run_nfstream(path)),
            ):
                n, _flows, seconds = run()
                packets[name] = n
                best[name] = min(best[name], seconds)
    pps = {name: packets[name] / best[name] for name in best}
    for name in best:
        print(f"{name:9}: {packets[name]:>8} packets {best[name]:8.3f} s {pps[name]:>10,.0f} packets/s")
    print(
        f"ratios: podwall DPI on / nfstream {pps['dpi on'] / pps['nfstream']:.2f}; "
        f"DPI off / nfstream {pps['dpi off'] / pps['nfstream']:.2f}; "
        f"DPI on / DPI off {pps['dpi on'] / pps['dpi off']:.2f}"
    )


if __name__ == "__main__":
    main()
