#!/usr/bin/env python
"""Heart-rate derivation: speed of ``physiossl.data.ecg.targets.heart_rate`` per record against the resampling every
conversion already does to the same record, timed in the same run, and accuracy on records of known rate.

    python benchmarks/bench_targets.py [--records 200] [--fs 100 500] [--repeats 3] [--seed 0]

The records are synth.py demo records (rhythm, morphology, baseline wander, noise and artifacts as in the demo
trees) synthesised at 500 Hz. Baseline: ``scipy.signal.resample_poly`` 500 Hz → 100 Hz of the (12, 5000)
record, the step PTB-XL, Chapman and CinC 2020 run per record at the default store rate. Measured:
``heart_rate`` on the record as a store at each ``--fs`` holds it (resampled beforehand, not timed). Times are
the median of ``--repeats`` passes over all records. Accuracy is against the rate each record was synthesised
with (the spec rate; irregular rhythms scatter around it by construction, so the regular rhythms SR, SBRAD and
STACH are also reported alone).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections import Counter

import numpy as np
import scipy
import wfdb
from scipy.signal import resample_poly

import physiossl
from physiossl.data.ecg import synth
from physiossl.data.ecg.targets import DETECT_FS, HEART_RATE_METHOD, heart_rate

REGULAR = ("SR", "SBRAD", "STACH")


def machine_info() -> str:
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return (f"machine: {platform.platform()}, python {platform.python_version()}, CPUs {os.cpu_count()} "
            f"(usable {usable})\n"
            f"versions: physiossl {physiossl.__version__}, numpy {np.__version__}, scipy {scipy.__version__}, "
            f"wfdb {wfdb.__version__}")


def records(n: int, seed: int) -> list[tuple[synth.EcgSpec, np.ndarray]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        spec = synth.sample_spec(rng)
        out.append((spec, synth.synthesize(spec, rng, fs=synth.FS)))
    return out


def per_record_seconds(fn, inputs: list, repeats: int) -> float:
    """Median over ``repeats`` passes of the mean seconds of ``fn(x)`` per input."""
    passes = []
    for _ in range(repeats):
        start = time.perf_counter()
        for x in inputs:
            fn(x)
        passes.append((time.perf_counter() - start) / len(inputs))
    return float(np.median(passes))


def accuracy(values: np.ndarray, specs: list[synth.EcgSpec]) -> str:
    rates = np.array([s.heart_rate for s in specs])
    regular = np.array([s.rhythm in REGULAR for s in specs])
    valid = np.isfinite(values)
    err = np.abs(values - rates)
    parts = [f"valid {valid.mean():.1%}"]
    for label, sel in (("all", valid), ("regular", valid & regular)):
        if sel.any():
            parts.append(f"{label}: |err| <= 3 bpm {np.mean(err[sel] <= 3):.1%}, <= 10 % "
                         f"{np.mean(err[sel] <= 0.1 * rates[sel]):.1%}, MAE {err[sel].mean():.2f} bpm")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--fs", type=int, nargs="+", default=[100, 500], help="store rates to measure")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    print(machine_info())
    print(f"method: {HEART_RATE_METHOD}")
    t = time.perf_counter()
    data = records(args.records, args.seed)
    specs = [spec for spec, _ in data]
    print(f"settings: {args.records} synth.py records (12 x {int(synth.DURATION_S * synth.FS)} at {synth.FS} Hz, "
          f"rhythms {dict(Counter(s.rhythm for s in specs))}), {args.repeats} repeats; synthesised in "
          f"{time.perf_counter() - t:.1f} s")

    raw = [x.astype(np.float64) for _, x in data]
    base_s = per_record_seconds(lambda x: resample_poly(x, 1, 5, axis=1).astype(np.float32), raw, args.repeats)
    results: dict = {"baseline_s": base_s, "fs": {}}
    print()
    print(f"{'path':52s} {'ms/record':>10s} {'records/s':>10s} {'vs baseline':>12s}")
    print(f"{'baseline: resample_poly 500 -> 100 Hz of the record':52s} {base_s * 1e3:10.2f} {1 / base_s:10,.0f} "
          f"{1.0:11.2f}x")
    for fs in args.fs:
        stored = raw if fs == synth.FS else [resample_poly(x, fs, synth.FS, axis=1).astype(np.float32) for x in raw]
        values, reasons = [], Counter()
        for x in stored:
            value, reason = heart_rate(x, fs)
            values.append(value)
            reasons[reason or "valid"] += 1
        secs = per_record_seconds(lambda x: heart_rate(x, fs), stored, args.repeats)
        results["fs"][fs] = {"seconds": secs, "records_per_s": 1 / secs, "ratio": secs / base_s,
                             "accuracy": accuracy(np.array(values), specs), "outcomes": dict(reasons)}
        label = f"heart_rate of a {fs} Hz record (detection at {DETECT_FS} Hz)"
        print(f"{label:52s} {secs * 1e3:10.2f} {1 / secs:10,.0f} {secs / base_s:11.2f}x")
    print()
    for fs, r in results["fs"].items():
        print(f"ratio heart_rate/resample ({fs} Hz): {r['ratio']:.2f}x, {r['records_per_s']:.0f} records/s")
        print(f"  accuracy vs spec rate ({fs} Hz): {r['accuracy']}")
        print(f"  outcomes ({fs} Hz): {r['outcomes']}")
    sys.stdout.flush()
    return results


if __name__ == "__main__":
    main()
