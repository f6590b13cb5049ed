"""Benchmark: packets per second of podwall's analysis vs nfstream (nDPI) over the corpus captures.

The corpus captures (nDPI's and the gRPC ones) are concatenated into one Ethernet pcap,
`--repeat` times (see bench/corpus.py). Both tools then read that same file in the same run, each with payload
inspection on (podwall's DPI at full depth, as `podwall analyze` runs it; see bench/dpi.py for
the detect depth; nDPI with 20 dissection packets, as the corpus expectations
were made), in interleaved rounds so noise on the shared machine hits both alike. Each
tool's figure is its best round; the ratio is podwall / nfstream. Not a test: it prints.

    .venv/bin/python bench/analyze.py [--rounds 3] [--repeat 20] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import DEFAULT_CORPUS, captures, concatenate, run_nfstream, run_podwall


def run_podwall_cli(path: Path) -> float:
    """Seconds for the whole `podwall analyze --json` command (start-up included)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "podwall.cli.main", "analyze", str(path), "--json"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20, help="how many times the corpus is concatenated")
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = ap.parse_args()
    files = captures(args.corpus)
    if not files:
        sys.exit(f"no captures under {args.corpus}/dpi: set --corpus or PODWALL_CORPUS")
    with tempfile.TemporaryDirectory(prefix="podwall-bench-") as tmp:
        path = Path(tmp) / "corpus-concatenated.pcap"
        frames = concatenate(files, args.repeat, path)
        print(
            f"{len(files)} corpus captures x {args.repeat} -> {frames} frames, "
            f"{path.stat().st_size / 1e6:.1f} MB; {args.rounds} interleaved rounds, best of each"
        )
        best_pw = best_nf = best_cli = float("inf")
        pw = nf = (0, 0, 0.0)
        for _ in range(args.rounds):
            pw = run_podwall(path)
            nf = run_nfstream(path)
            best_cli = min(best_cli, run_podwall_cli(path))
            best_pw, best_nf = min(best_pw, pw[2]), min(best_nf, nf[2])
    pw_pps, nf_pps, cli_pps = pw[0] / best_pw, nf[0] / best_nf, pw[0] / best_cli
    print(f"podwall (engine) : {pw[0]:>8} packets {pw[1]:>6} flows {best_pw:8.3f} s {pw_pps:>10,.0f} packets/s")
    print(f"podwall analyze  : {pw[0]:>8} packets {'':>6}       {best_cli:8.3f} s {cli_pps:>10,.0f} packets/s")
    print(f"nfstream (nDPI)  : {nf[0]:>8} packets {nf[1]:>6} flows {best_nf:8.3f} s {nf_pps:>10,.0f} packets/s")
    print(f"ratio podwall/nfstream packets/s: engine {pw_pps / nf_pps:.2f}, analyze command {cli_pps / nf_pps:.2f}")


if __name__ == "__main__":
    main()
