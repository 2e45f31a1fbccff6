#!/usr/bin/env python3
"""The main job's second half: an unmodified program (sort, from coreutils)
run natively and under libuhmm_preload.so with policy=chaos, outputs compared
byte for byte, and a short report from the runtime's statistics.

    scripts/preload_job.py PRELOAD_SO [MiB]
"""
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def main():
    so = os.path.abspath(sys.argv[1])
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    conf = os.environ.get(
        "UHMM_PRELOAD_CONF",
        "arena=memfd,arena_size=1G,policy=chaos,chaos_period_ms=20,chaos_fraction=0.5,min_range=64K")
    with tempfile.TemporaryDirectory(prefix="uhmm-main-") as tmp:
        data = os.path.join(tmp, "input.txt")
        rng = random.Random(1)
        with open(data, "w") as f:
            written = 0
            while written < mib << 20:
                line = "%016x %s\n" % (rng.getrandbits(64), "x" * rng.randint(1, 40))
                f.write(line)
                written += len(line)
        env = dict(os.environ, LC_ALL="C")

        def run(extra, out):
            t0 = time.monotonic()
            with open(out, "wb") as o:
                p = subprocess.run(["sort", data], stdout=o, stderr=subprocess.PIPE, env=dict(env, **extra))
            return p.returncode, time.monotonic() - t0, p.stderr.decode(errors="replace")

        rc_n, t_n, _ = run({}, os.path.join(tmp, "native.txt"))
        stats = os.path.join(tmp, "stats-%p.json")
        rc_p, t_p, err = run({"LD_PRELOAD": so, "UHMM_CONF": conf + ",stats=" + stats},
                             os.path.join(tmp, "preload.txt"))
        same = open(os.path.join(tmp, "native.txt"), "rb").read() == open(os.path.join(tmp, "preload.txt"), "rb").read()
        files = glob.glob(os.path.join(tmp, "stats-*.json"))
        s = json.load(open(files[0])) if files else {}
        print("uhmm main job: sort of %d MiB under libuhmm_preload.so (%s)" % (mib, conf))
        print("  native:  exit %d, %.2f s" % (rc_n, t_n))
        print("  preload: exit %d, %.2f s" % (rc_p, t_p))
        if err.strip():
            print("  preload stderr: " + err.strip().replace("\n", "\n    "))
        print("  output identical: %s" % ("yes" if same else "NO"))
        print("  pages to device %d, to host %d; faults %d (device %d); chaos rounds %d, migrations %d"
              % (s.get("pages_to_device", 0), s.get("pages_to_host", 0), s.get("faults", 0),
                 s.get("device_faults", 0), s.get("policy_rounds", 0), s.get("migrations", 0)))
        print("  bytes to device %.1f MiB, to host %.1f MiB; arena high water %.1f MiB"
              % (s.get("bytes_to_device", 0) / 2**20, s.get("bytes_to_host", 0) / 2**20,
                 s.get("arena_high_water_bytes", 0) / 2**20))
        ok = rc_n == 0 and rc_p == 0 and same and s.get("pages_to_device", 0) > 0
        print("  result: %s" % ("OK" if ok else "FAILED"))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
