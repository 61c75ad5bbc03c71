"""Wall time of `opscope compare --all` (80 torchvision classification models at 1x3x224x224).

Usage: python benchmarks/zoo.py [--cpu]

Runs the real command line in a subprocess (imports included, as a user would see it) on the
meta device, and with --cpu also on the CPU (real weights initialisation and forward passes)
for reference, then prints both times and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def timed_compare_all(device: str) -> tuple[float, int]:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "opscope", "compare", "--all", "--device", device, "--format", "json"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    models = json.loads(result.stdout)["models"]
    return elapsed, sum(1 for model in models if model["error"] is None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="also time the same run on the CPU")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}")
    meta_time, counted = timed_compare_all("meta")
    print(f"compare --all on meta: {meta_time:6.1f} s ({counted} models counted)")
    if args.cpu:
        cpu_time, counted = timed_compare_all("cpu")
        print(f"compare --all on cpu:  {cpu_time:6.1f} s ({counted} models counted)")
        print(f"meta / cpu: {meta_time / cpu_time:.2f}")


if __name__ == "__main__":
    main()
