"""An ordinary Python program for the preload tests: it knows nothing of uhmm.

Run natively and under libuhmm_preload.so it must print the same lines. It
keeps tens of MB live in the shapes CPython allocates them (lists of ints in
obmalloc arenas and one big pointer array, dicts, bytearrays grown by
realloc, bytes from joins), hashes them, and runs a child Python through
subprocess, which gets the preload too (it inherits the environment) and
writes its own statistics file.

Every printed value is deterministic: a seeded random.Random, no str hashing
order (PYTHONHASHSEED), no addresses, no timing.
"""

import array
import hashlib
import random
import subprocess
import sys
import zlib


def sha(data):
    return hashlib.sha256(data).hexdigest()[:32]


def lists(rng):
    # 2M Python ints: a 16 MB pointer array plus ~64 MB of int objects.
    values = [rng.getrandbits(64) for _ in range(2_000_000)]
    packed = array.array("Q", values).tobytes()
    print("list", len(values), sha(packed))
    values.sort()
    print("sorted", sha(array.array("Q", values).tobytes()))
    squares = [v % 1_000_003 for v in values]
    squares.reverse()
    print("derived", sum(squares), max(squares), min(squares))
    return values


def dicts(values):
    table = {i: format(v, "x") for i, v in enumerate(values[:600_000])}
    by_text = {text: i for i, text in table.items()}
    total = sum(len(t) for t in table.values())
    hits = sum(1 for i in range(0, 600_000, 7) if table[i] in by_text)
    print("dict", len(table), len(by_text), total, hits)
    # Dict order is insertion order, so this digest is deterministic.
    print("dict digest", sha("".join(table[i] for i in range(0, 600_000, 13)).encode()))


def bytearrays(rng):
    # 48 MB from a 1 MB random block, then a page-strided rewrite and growth
    # by extend (realloc of a large block: mremap under the preload).
    block = bytearray(rng.randbytes(1 << 20)) * 48
    for i in range(0, len(block), 4096):
        block[i] = (i >> 12) & 0xFF
    print("bytearray", len(block), sha(block), zlib.crc32(block))
    for k in range(8):
        block.extend(bytes([k]) * (2 << 20))
    view = memoryview(block)
    print("grown", len(block), sha(view[len(block) // 3 :]), hashlib.md5(bytes(view[::4096])).hexdigest())
    joined = b"".join(bytes(view[i : i + 512]) for i in range(0, 16 << 20, 1024))
    print("joined", len(joined), sha(joined))
    return block


def child_process(block):
    # A child Python reading 8 MB from a pipe and hashing it.
    code = (
        "import hashlib, sys\n"
        "data = sys.stdin.buffer.read()\n"
        "copy = bytearray(data) * 2\n"
        "print(len(copy), hashlib.sha1(copy).hexdigest())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], input=bytes(block[: 8 << 20]), capture_output=True, check=False
    )
    print("child", done.returncode, done.stdout.decode().strip(), len(done.stderr))


def main():
    rng = random.Random(20240601)
    values = lists(rng)
    dicts(values)
    del values
    block = bytearrays(rng)
    child_process(block)
    print("done")


if __name__ == "__main__":
    main()
