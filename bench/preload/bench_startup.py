#!/usr/bin/env python3
"""bench/preload: what libuhmm_preload.so costs each exec of a program.

Starts `/bin/true` (nothing but process start and exit) `execs` times in a
batch, natively and under the preload library with no UHMM_CONF (the
defaults a user gets), batches alternating so that drift hits both sides,
and reports the median time per exec of each and their ratio. The limit is
the native exec measured in the same run. One JSON object on stdout.

    bench_startup.py PRELOAD_SO [execs=50] [batches=7] [program=/bin/true]

Exit status: 0; 77 (skipped) when the library cannot run here (no
userfaultfd permission: it would step aside, which costs nothing to measure).
"""
import json
import os
import statistics
import subprocess
import sys
import time


def args():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    opts = {"execs": "50", "batches": "7", "program": "/bin/true"}
    for a in sys.argv[2:]:
        k, _, v = a.partition("=")
        if k not in opts:
            sys.exit("bench_startup: unknown key " + k)
        opts[k] = v
    return sys.argv[1], int(opts["execs"]), int(opts["batches"]), opts["program"]


def batch(program, env, execs):
    start = time.perf_counter()
    for _ in range(execs):
        subprocess.run([program], env=env, check=True)
    return (time.perf_counter() - start) / execs


def main():
    preload, execs, batches, program = args()
    native_env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "UHMM_CONF")}
    preload_env = dict(native_env, LD_PRELOAD=os.path.abspath(preload))
    probe = subprocess.run(["/bin/sh", "-c", "true"], env=preload_env, capture_output=True, text=True)
    if "running unmanaged" in probe.stderr:
        print("bench_startup: " + probe.stderr.strip(), file=sys.stderr)
        return 77
    batch(program, native_env, 5)   # warm the page cache for both
    batch(program, preload_env, 5)
    native, preloaded = [], []
    for _ in range(batches):
        native.append(batch(program, native_env, execs))
        preloaded.append(batch(program, preload_env, execs))
    n, p = statistics.median(native), statistics.median(preloaded)
    print(json.dumps({
        "bench": "preload_startup",
        "program": program,
        "execs_per_batch": execs,
        "batches": batches,
        "native_ms_per_exec": round(n * 1e3, 3),
        "preloaded_ms_per_exec": round(p * 1e3, 3),
        "added_ms_per_exec": round((p - n) * 1e3, 3),
        "ratio_preloaded_to_native": round(p / n, 3),
        "native_samples_ms": [round(x * 1e3, 3) for x in native],
        "preloaded_samples_ms": [round(x * 1e3, 3) for x in preloaded],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
