"""Run every benchmark section, print the table and write benchmarks/results.json.

    python -m benchmarks            # what `make bench` runs
    python -m benchmarks --quick    # a smoke run: few rounds, small inputs (figures not comparable)
    python -m benchmarks --only decode books
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time
from pathlib import Path

from benchmarks.harness import Figure, as_json, table

RESULTS = Path(__file__).resolve().parent / "results.json"
# Section name -> module in this folder with run(quick: bool) -> list[Figure]; run in this order.
SECTIONS = {
    "decode": "benchmarks.bench_decode",
    "books": "benchmarks.bench_books",
    "load": "benchmarks.bench_load",
    "end_to_end": "benchmarks.bench_end_to_end",
    "replay": "benchmarks.bench_replay",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--quick", action="store_true", help="few rounds, small inputs: checks the benchmarks run")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="run these sections only")
    args = parser.parse_args()
    figures: list[Figure] = []
    seconds: dict[str, float] = {}
    for name in args.only or SECTIONS:
        started = time.perf_counter()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        figures += importlib.import_module(SECTIONS[name]).run(args.quick)
        seconds[name] = round(time.perf_counter() - started, 1)
    print(table(figures))
    RESULTS.write_text(json.dumps({
        "python": sys.version.split()[0], "machine": platform.machine(), "quick": args.quick,
        "section_seconds": seconds, "figures": as_json(figures),
    }, indent=2) + "\n")
    targeted = [f for f in figures if f.holds is not None]
    held = sum(bool(f.holds) for f in targeted)
    print(f"\n{held} of {len(targeted)} targets hold", file=sys.stderr)


if __name__ == "__main__":
    main()
