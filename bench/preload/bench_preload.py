#!/usr/bin/env python3
"""bench/preload: an unmodified program from Debian (sort, coreutils) natively
and under libuhmm_preload.so, in one run, so that every figure stands next to
the native baseline measured beside it.

  none       policy=none: what the library costs a program whose memory it
             manages but never moves (goal: median time <= 1.03 x native)
  unmanaged  policy=none with min_range=1T: the hooks alone, nothing managed
             (splits the overhead into hooks and userfaultfd faults)
  tier       policy=tier with tier_hot at `tier_fraction` of the program's
             footprint (the native run's peak RSS): slowdown, migrations,
             pages each way, device faults; the output must be byte-identical

Runs alternate native / preloaded (native, none, unmanaged, native, none, ...)
so that drift hits both sides; the JSON gives medians, every sample and the
ratios. One JSON object on stdout; progress on stderr.

    bench_preload.py PRELOAD_SO [key=value ...] [quick]

Keys (each also UHMM_BENCH_<KEY>): size (input bytes, 100M; quick 16M),
reps (native/none/unmanaged rounds, 5; quick 2), tier_reps (3; quick 1),
tier_fraction (0.25), parallel (sort --parallel, default: sort's own),
arena (memfd), conf (extra UHMM_CONF keys for every preloaded run),
parts (none,unmanaged,tier), run_timeout_s (300: a run still going then is
killed and reported as hung), seed (1).

Exit status: 0 when every run succeeded with the native output; 1 when a
preloaded run failed, hung or gave different output (the JSON says which);
77 (skipped) when sort is missing or the library cannot manage memory here
(no userfaultfd permission).
"""
import glob
import hashlib
import json
import os
import random
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

GOAL_NONE_RATIO = 1.03
PAGE = 4096


# ---- arguments (bench/runtime/common.hpp's conventions) ---------------------------

class Args:
    def __init__(self, argv):
        self.kv = {}
        self.positional = []
        for a in argv:
            a = a.lstrip("-")
            if "=" in a:
                k, v = a.split("=", 1)
                self.kv[k] = v
            elif a in ("quick",):
                self.kv[a] = "1"
            else:
                self.positional.append(a)
        self.quick = self.get("quick", "0") not in ("0", "")

    def get(self, key, default):
        if key in self.kv:
            return self.kv[key]
        v = os.environ.get("UHMM_BENCH_" + key.upper())
        return v if v else default

    def size(self, key, default, quick_default):
        text = self.get(key, quick_default if self.quick else default)
        try:
            return parse_size(text)
        except ValueError:
            die(2, "bench: %s=%s: not a size (e.g. 100M, 1G)" % (key, text))

    def integer(self, key, default, quick_default):
        text = self.get(key, str(quick_default if self.quick else default))
        try:
            v = int(text)
            if v <= 0:
                raise ValueError
            return v
        except ValueError:
            die(2, "bench: %s=%s: not a positive integer" % (key, text))

    def number(self, key, default):
        text = self.get(key, str(default))
        try:
            v = float(text)
            if not 0 < v <= 1:
                raise ValueError
            return v
        except ValueError:
            die(2, "bench: %s=%s: expected a fraction 0 < f <= 1" % (key, text))


def parse_size(text):
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper()
    suffix = t[-1:] if t[-1:] in "KMGT" else ""
    n = int(t[:-1] if suffix else t)
    if n <= 0:
        raise ValueError
    return n * mult[suffix]


def size_text(b):
    for s, m in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b % m == 0:
            return "%d%s" % (b // m, s)
    return str(b)


def die(code, msg):
    print(msg, file=sys.stderr)
    sys.exit(code)


def log(msg):
    print("bench_preload: " + msg, file=sys.stderr, flush=True)


# ---- the workload ----------------------------------------------------------------------

def write_input(path, nbytes, seed):
    """Lines with a random 16-hex-digit key and a tail of 1-40 letters."""
    rng = random.Random(seed)
    written = 0
    chunk = []
    with open(path, "w") as f:
        while written < nbytes:
            line = "%016x %s\n" % (rng.getrandbits(64), "x" * rng.randint(1, 40))
            chunk.append(line)
            written += len(line)
            if len(chunk) >= 65536:
                f.write("".join(chunk))
                chunk = []
        f.write("".join(chunk))
    return written


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def base_env(tmp):
    drop = ("LD_PRELOAD", "UHMM_CONF", "LC_ALL", "TMPDIR", "MALLOC_PERTURB_")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["LC_ALL"] = "C"
    env["TMPDIR"] = tmp
    return env


class Run:
    """One run of the program: wall time, the child's own rusage, output hash,
    and (preloaded) its statistics file."""

    def __init__(self, argv, env, out_path, timeout_s, stats_glob=None):
        for f in glob.glob(stats_glob or "/nonexistent"):
            os.unlink(f)
        with open(out_path, "wb") as out, open(out_path + ".err", "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
            hung = threading.Event()

            def kill():
                hung.set()
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

            timer = threading.Timer(timeout_s, kill)
            timer.start()
            _, status, ru = os.wait4(p.pid, 0)
            self.wall_s = time.monotonic() - t0
            timer.cancel()
            p.returncode = os.waitstatus_to_exitcode(status)
        self.pid = p.pid
        self.hung = hung.is_set()
        self.rc = p.returncode
        self.user_s = ru.ru_utime
        self.sys_s = ru.ru_stime
        self.maxrss_bytes = ru.ru_maxrss * 1024
        self.minflt = ru.ru_minflt
        self.nvcsw = ru.ru_nvcsw
        self.nivcsw = ru.ru_nivcsw
        with open(out_path + ".err", "rb") as f:
            self.stderr = f.read().decode(errors="replace").strip()
        self.sha256 = sha256_of(out_path) if self.rc == 0 else None
        self.stats = None
        if stats_glob:
            own = stats_glob.replace("*", str(self.pid))
            if os.path.exists(own):
                with open(own) as f:
                    self.stats = json.load(f)

    def ok(self):
        return self.rc == 0 and not self.hung

    def sample(self):
        return {"wall_s": round(self.wall_s, 3), "user_s": round(self.user_s, 3), "sys_s": round(self.sys_s, 3),
                "maxrss_bytes": self.maxrss_bytes, "minflt": self.minflt, "nvcsw": self.nvcsw}


def median(xs):
    return statistics.median(xs) if xs else 0.0


def ratio(a, b):
    return round(a / b, 3) if b > 0 else 0.0


STAT_KEYS = ("faults", "first_touch_faults", "device_faults", "write_waits", "pages_zero_filled",
             "pages_to_device", "pages_to_host", "pages_to_host_on_fault", "pages_discarded",
             "migrate_failed_pages", "migrations", "policy_rounds", "migrations_would_block",
             "bytes_to_device", "bytes_to_host", "ranges", "ranges_managed", "metadata_bytes",
             "arena_high_water_bytes")


def summarize(runs, native_runs, native_sha):
    """Medians of a preloaded configuration next to the native medians of the same rounds."""
    nat_wall = median([r.wall_s for r in native_runs])
    nat_cpu = median([r.user_s + r.sys_s for r in native_runs])
    good = [r for r in runs if r.ok()]
    wall = median([r.wall_s for r in good])
    out = {
        "runs": len(runs),
        "failed": [{"rc": r.rc, "hung": r.hung, "stderr": r.stderr[-400:]} for r in runs if not r.ok()],
        "output_identical": all(r.ok() and r.sha256 == native_sha for r in runs),
        "median_s": round(wall, 3),
        "native_median_s": round(nat_wall, 3),
        "ratio_to_native": ratio(wall, nat_wall),
        "overhead_pct": round((wall / nat_wall - 1) * 100, 1) if nat_wall > 0 and good else None,
        "median_cpu_s": round(median([r.user_s + r.sys_s for r in good]), 3),
        "native_median_cpu_s": round(nat_cpu, 3),
        "cpu_ratio_to_native": ratio(median([r.user_s + r.sys_s for r in good]), nat_cpu),
        "median_user_s": round(median([r.user_s for r in good]), 3),
        "median_sys_s": round(median([r.sys_s for r in good]), 3),
        "native_median_user_s": round(median([r.user_s for r in native_runs]), 3),
        "native_median_sys_s": round(median([r.sys_s for r in native_runs]), 3),
        "median_voluntary_switches": int(median([r.nvcsw for r in good])),
        "native_median_voluntary_switches": int(median([r.nvcsw for r in native_runs])),
        "samples": [r.sample() for r in runs],
    }
    stats = [r.stats for r in good if r.stats]
    if stats:
        # The counters of the median run (every run's are in stats_samples).
        mid = sorted(good, key=lambda r: r.wall_s)[len(good) // 2]
        s = mid.stats or stats[0]
        out["stats"] = {k: s.get(k, 0) for k in STAT_KEYS}
        out["stats_samples"] = [{k: x.get(k, 0) for k in ("faults", "device_faults", "pages_to_device",
                                                          "pages_to_host", "migrations")} for x in stats]
        # What the time over native costs per fault, and how many pages a
        # first-touch fault filled (fault_around at work: 1 = none).
        extra = wall - nat_wall
        f = s.get("faults", 0)
        out["extra_s_per_fault_us"] = round(extra / f * 1e6, 2) if f else None
        ft = s.get("first_touch_faults", 0)
        out["pages_per_first_touch_fault"] = round(s.get("pages_zero_filled", 0) / ft, 2) if ft else None
    out["stats_missing"] = sum(1 for r in good if not r.stats)
    return out


def main():
    args = Args(sys.argv[1:])
    if not args.positional:
        die(2, "usage: bench_preload.py PRELOAD_SO [key=value ...] [quick]")
    so = os.path.abspath(args.positional[0])
    if not os.path.exists(so):
        die(2, "bench: %s: no such file" % so)
    sort = "/usr/bin/sort"
    if not os.access(sort, os.X_OK):
        die(77, "bench: skipped: %s missing (Debian package coreutils)" % sort)

    size = args.size("size", "100M", "16M")
    reps = args.integer("reps", 5, 2)
    tier_reps = args.integer("tier_reps", 3, 1)
    frac = args.number("tier_fraction", 0.25)
    seed = args.integer("seed", 1, 1)
    timeout_s = args.integer("run_timeout_s", 300, 120)
    arena = args.get("arena", "memfd")
    extra = args.get("conf", "")
    parallel = args.get("parallel", "")
    parts = [p for p in args.get("parts", "none,unmanaged,tier").replace(" ", ",").split(",") if p]

    tmp_parent = os.environ.get("TMPDIR") or "/tmp"
    with tempfile.TemporaryDirectory(prefix="uhmm-bench-preload-", dir=tmp_parent) as tmp:
        env = base_env(tmp)
        data = os.path.join(tmp, "input.txt")
        t0 = time.monotonic()
        nbytes = write_input(data, size, seed)
        log("input: %d bytes in %.1f s" % (nbytes, time.monotonic() - t0))
        argv = [sort] + (["--parallel=" + parallel] if parallel else []) + [data]
        out = os.path.join(tmp, "out.txt")
        stats_dir = os.path.join(tmp, "stats")
        os.mkdir(stats_dir)
        stats_glob = os.path.join(stats_dir, "uhmm-*.json")

        def native():
            return Run(argv, env, out, timeout_s)

        def preloaded(conf):
            full = ",".join(c for c in ("arena=" + arena, conf, "log=error", extra,
                                        "stats=" + os.path.join(stats_dir, "uhmm-%p.json")) if c)
            return Run(argv, dict(env, LD_PRELOAD=so, UHMM_CONF=full), out, timeout_s, stats_glob)

        # Warm-up: the page cache, the oracle output, and the footprint.
        warm = native()
        if not warm.ok():
            die(1, "bench: native sort failed (rc %d): %s" % (warm.rc, warm.stderr))
        native_sha = warm.sha256
        probe = preloaded("policy=none,arena_size=2M")
        if not probe.ok():
            die(1, "bench: preloaded sort (policy=none) failed (rc %d%s): %s"
                % (probe.rc, ", hung" if probe.hung else "", probe.stderr))
        if probe.stats is None:
            die(77, "bench: skipped: the preloaded run wrote no statistics: %s" % probe.stderr)
        if probe.stats.get("ranges_managed", 0) == 0:
            die(77, "bench: skipped: nothing was managed (stderr: %s)" % (probe.stderr or "-"))

        native_runs, none_runs, unmanaged_runs, tier_runs = [], [], [], []
        # Arena for none/unmanaged: it is never used (policy=none moves nothing).
        none_conf = "policy=none,arena_size=2M"
        for i in range(reps):
            native_runs.append(native())
            if "none" in parts:
                none_runs.append(preloaded(none_conf))
            if "unmanaged" in parts:
                unmanaged_runs.append(preloaded(none_conf + ",min_range=1T"))
            log("round %d/%d: native %.2f s%s%s" % (
                i + 1, reps, native_runs[-1].wall_s,
                ", none %.2f s" % none_runs[-1].wall_s if none_runs else "",
                ", unmanaged %.2f s" % unmanaged_runs[-1].wall_s if unmanaged_runs else ""))

        footprint = int(median([r.maxrss_bytes for r in native_runs + [warm]]))
        tier_hot = max(PAGE, int(footprint * frac) // PAGE * PAGE)
        # The arena holds what does not fit on the host, with slack, in whole 2M chunks.
        arena_bytes = (footprint + (64 << 20) + (2 << 20) - 1) // (2 << 20) * (2 << 20)
        tier_conf = "policy=tier,tier_hot=%s,arena_size=%s" % (size_text(tier_hot), size_text(arena_bytes))
        tier_native = []
        if "tier" in parts:
            for i in range(tier_reps):
                tier_native.append(native())
                tier_runs.append(preloaded(tier_conf))
                r = tier_runs[-1]
                log("tier %d/%d: native %.2f s, tier %.2f s (rc %d%s), migrations %s, device faults %s" % (
                    i + 1, tier_reps, tier_native[-1].wall_s, r.wall_s, r.rc, ", HUNG" if r.hung else "",
                    (r.stats or {}).get("migrations"), (r.stats or {}).get("device_faults")))

        report = {
            "benchmark": "preload_sort",
            "program": " ".join(["sort"] + argv[1:-1] + ["INPUT"]),
            "env": "LC_ALL=C",
            "input_bytes": nbytes,
            "reps": reps,
            "tier_reps": tier_reps,
            "preload": so,
            "cpus": os.cpu_count(),
            # A child's ru_maxrss starts from this process's peak at exec: it
            # must stay well below the footprint for the footprint to be sort's.
            "runner_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "loadavg_at_end": os.getloadavg()[0],
            "native": {
                "median_s": round(median([r.wall_s for r in native_runs]), 3),
                "min_s": round(min(r.wall_s for r in native_runs), 3),
                "max_s": round(max(r.wall_s for r in native_runs), 3),
                "median_cpu_s": round(median([r.user_s + r.sys_s for r in native_runs]), 3),
                "footprint_bytes": footprint,
                "samples": [r.sample() for r in native_runs],
            },
        }
        ratios = {}
        ok = True
        if none_runs:
            report["none"] = dict(conf=none_conf + (("," + extra) if extra else ""),
                                  **summarize(none_runs, native_runs, native_sha))
            ratios["none_vs_native"] = report["none"]["ratio_to_native"]
            ratios["none_cpu_vs_native"] = report["none"]["cpu_ratio_to_native"]
            ok &= report["none"]["output_identical"] and not report["none"]["failed"]
        if unmanaged_runs:
            report["unmanaged"] = dict(conf=none_conf + ",min_range=1T" + (("," + extra) if extra else ""),
                                       **summarize(unmanaged_runs, native_runs, native_sha))
            ratios["unmanaged_vs_native"] = report["unmanaged"]["ratio_to_native"]
            ok &= report["unmanaged"]["output_identical"] and not report["unmanaged"]["failed"]
        if tier_runs:
            t = summarize(tier_runs, tier_native, native_sha)
            report["tier"] = dict(conf=tier_conf + (("," + extra) if extra else ""),
                                  tier_fraction=frac, tier_hot_bytes=tier_hot, footprint_bytes=footprint, **t)
            ratios["tier_vs_native"] = t["ratio_to_native"]
            s = t.get("stats", {})
            ratios["tier_pages_moved_per_footprint_page"] = round(
                (s.get("pages_to_device", 0) + s.get("pages_to_host", 0)) / (footprint / PAGE), 2)
            ok &= t["output_identical"] and not t["failed"]
        report["ratios"] = ratios
        report["goals"] = {"none_vs_native": "<= %.2f" % GOAL_NONE_RATIO,
                           "tier": "output identical to native"}
        if none_runs:
            report["goals_met"] = {"none_vs_native": ratios["none_vs_native"] <= GOAL_NONE_RATIO}
        report["ok"] = bool(ok)
        print(json.dumps(report, indent=2))
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
