"""Benchmark: packets per second of podwall's analysis vs nfstream (nDPI) over the corpus captures.

Both tools read the same capture files in the same run, each with payload inspection on
(podwall's DPI; nfstream's nDPI with 20 dissection packets, as the corpus expectations were
made), several rounds interleaved so that noise on the shared machine hits both alike. The
figure is the best round of each; the ratio is podwall / nfstream. Not a test: it prints.

    .venv/bin/python bench/analyze.py [--rounds 5] [--corpus DIR] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from podwall.analysis.runner import read_flows  # noqa: E402
from podwall.inventory.resolver import Resolver  # noqa: E402


def captures(corpus: Path) -> list[Path]:
    found: list[Path] = []
    for sub in ("dpi/ndpi", "dpi/grpc"):
        folder = corpus / sub
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.suffix in (".pcap", ".pcapng", ".cap"))
    return found


def run_podwall(files: list[Path]) -> tuple[int, int, float]:
    """(packets decoded, flows, seconds) for one pass of podwall over the files."""
    start = time.perf_counter()
    packets = flows = 0
    resolver = Resolver(None)
    for f in files:
        for nf in read_flows([f], resolver, on_problem=lambda p: None):
            flows += 1
            packets += nf.flow.packets_total
    return packets, flows, time.perf_counter() - start


def run_nfstream(files: list[Path]) -> tuple[int, int, float]:
    from nfstream import NFStreamer

    start = time.perf_counter()
    packets = flows = 0
    for f in files:
        streamer = NFStreamer(source=str(f), statistical_analysis=False, splt_analysis=0, n_dissections=20)
        for flow in streamer:
            flows += 1
            packets += flow.bidirectional_packets
    return packets, flows, time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1, help="pass over the file list this many times per round")
    ap.add_argument(
        "--corpus",
        type=Path,
        default=Path(os.environ.get("PODWALL_CORPUS", REPO.parent / "shared" / "corpus")),
    )
    args = ap.parse_args()
    files = captures(args.corpus) * args.repeat
    if not files:
        sys.exit(f"no captures under {args.corpus}/dpi: set --corpus or PODWALL_CORPUS")
    size = sum(f.stat().st_size for f in files)
    print(f"{len(files)} capture files, {size / 1e6:.2f} MB, {args.rounds} rounds (best of each)")
    best_pw = best_nf = float("inf")
    pw = nf = (0, 0, 0.0)
    for _ in range(args.rounds):
        pw = run_podwall(files)
        nf = run_nfstream(files)
        best_pw, best_nf = min(best_pw, pw[2]), min(best_nf, nf[2])
    pw_pps, nf_pps = pw[0] / best_pw, nf[0] / best_nf
    print(
        f"podwall : {pw[0]:>8} packets {pw[1]:>5} flows  {best_pw * 1e3:8.1f} ms  {pw_pps:>10,.0f} packets/s"
    )
    print(
        f"nfstream: {nf[0]:>8} packets {nf[1]:>5} flows  {best_nf * 1e3:8.1f} ms  {nf_pps:>10,.0f} packets/s"
    )
    print(f"ratio podwall/nfstream (packets/s): {pw_pps / nf_pps:.2f}")


if __name__ == "__main__":
    main()
