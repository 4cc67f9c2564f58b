"""Peak RSS of a command and its child processes, sampled every 0.2 s (Snakemake's benchmark files sample every
second for the first 30 s of a job, then every 30 s, so they can miss a short peak such as a store writer's shard
flush). Used for the dense-sampled rows of docs/sizing.md:

    python scripts/peak_rss.py physiossl convert ptbxl --raw data/rehearsal_tenth/raw/ptbxl --out /tmp/p.zarr --fs 500
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    root, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
        except psutil.Error:
            pass
        time.sleep(0.2)
    print(f"exit {proc.returncode}, wall {time.time() - started:.0f} s, peak RSS {peak / 2**20:.0f} MB "
          f"(sampled every 0.2 s, summed over the processes)")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
