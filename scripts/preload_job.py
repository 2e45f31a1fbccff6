#!/usr/bin/env python3
"""The main job's second half: an unmodified program (sort, from coreutils)
run natively, then under libuhmm_preload.so with policy=tier and tier_hot at
a quarter of the native run's peak RSS, so that most of its memory must live
on the device and come back on CPU faults. Outputs compared byte for byte; a
short report from the runtime's statistics.

    scripts/preload_job.py PRELOAD_SO [MiB]

UHMM_PRELOAD_CONF replaces the configuration (stats= is added to it).
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time

MiB = 1 << 20
TIER_FRACTION = 0.25


def write_input(path, nbytes):
    # In chunks, so that this process stays small: a child's ru_maxrss starts
    # from its parent's peak at exec, and it is taken for sort's footprint.
    rng = random.Random(1)
    written = 0
    with open(path, "w") as f:
        while written < nbytes:
            chunk = []
            while written < nbytes and len(chunk) < 65536:
                chunk.append("%016x %s\n" % (rng.getrandbits(64), "x" * rng.randint(1, 40)))
                written += len(chunk[-1])
            f.write("".join(chunk))


def run(argv, env, out):
    """Exit status, seconds, peak RSS in bytes, stderr."""
    t0 = time.monotonic()
    with open(out, "wb") as o, open(out + ".err", "wb") as e:
        p = subprocess.Popen(argv, stdout=o, stderr=e, env=env)
        _, status, ru = os.wait4(p.pid, 0)
    seconds = time.monotonic() - t0
    with open(out + ".err", "rb") as e:
        err = e.read().decode(errors="replace").strip()
    return os.waitstatus_to_exitcode(status), seconds, ru.ru_maxrss * 1024, err


def same_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MiB), fb.read(MiB)
            if x != y:
                return False
            if not x:
                return True


def main():
    so = os.path.abspath(sys.argv[1])
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    with tempfile.TemporaryDirectory(prefix="uhmm-main-") as tmp:
        data = os.path.join(tmp, "input.txt")
        write_input(data, mib * MiB)
        drop = ("LD_PRELOAD", "UHMM_CONF", "MALLOC_PERTURB_")
        env = {k: v for k, v in os.environ.items() if k not in drop}
        env.update(LC_ALL="C", TMPDIR=tmp)
        argv = ["sort", data]
        native_out, managed_out = os.path.join(tmp, "native.txt"), os.path.join(tmp, "managed.txt")

        rc_n, t_n, rss, _ = run(argv, env, native_out)
        tier_hot = max(4096, int(rss * TIER_FRACTION) // 4096 * 4096)
        arena = (rss + 64 * MiB + 2 * MiB - 1) // (2 * MiB) * (2 * MiB)   # whole 2M chunks, with slack
        conf = os.environ.get("UHMM_PRELOAD_CONF") or (
            "arena=memfd,arena_size=%dM,policy=tier,tier_hot=%dK,log=error" % (arena // MiB, tier_hot // 1024))
        stats = os.path.join(tmp, "stats-%p.json")
        rc_m, t_m, _, err = run(argv, dict(env, LD_PRELOAD=so, UHMM_CONF=conf + ",stats=" + stats), managed_out)
        same = rc_n == 0 and rc_m == 0 and same_bytes(native_out, managed_out)
        files = glob.glob(os.path.join(tmp, "stats-*.json"))
        s = json.load(open(files[0])) if files else {}
        moving = "policy=none" not in conf

        print("uhmm main job: sort (coreutils, unmodified) of %d MiB under libuhmm_preload.so" % mib)
        print("  conf: %s" % conf)
        print("  footprint (native peak RSS) %.1f MiB; tier_hot %.1f MiB (%d%%)"
              % (rss / MiB, tier_hot / MiB, round(100 * TIER_FRACTION)))
        print("  native:  exit %d, %.2f s" % (rc_n, t_n))
        print("  managed: exit %d, %.2f s (%.1fx native); output identical: %s"
              % (rc_m, t_m, t_m / t_n if t_n > 0 else 0, "yes" if same else "NO"))
        if err:
            print("  managed stderr: " + err.replace("\n", "\n    "))
        print("  faults %d (first touch %d, device %d); policy rounds %d, migrations %d"
              % (s.get("faults", 0), s.get("first_touch_faults", 0), s.get("device_faults", 0),
                 s.get("policy_rounds", 0), s.get("migrations", 0)))
        print("  pages to device %d (%.1f MiB), to host %d (%.1f MiB); arena high water %.1f MiB"
              % (s.get("pages_to_device", 0), s.get("bytes_to_device", 0) / MiB, s.get("pages_to_host", 0),
                 s.get("bytes_to_host", 0) / MiB, s.get("arena_high_water_bytes", 0) / MiB))
        ok = same and s.get("faults", 0) > 0 and (s.get("pages_to_device", 0) > 0 or not moving)
        print("  result: %s" % ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
