# Processes started every way Python starts them: a multiprocessing pool
# (fork and spawn start methods), subprocess pipes, and a shell pipeline.
import hashlib
import multiprocessing as mp
import subprocess
import sys


def work(n):
    data = bytearray(n.to_bytes(4, "little")) * (1 << 18)
    return n, hashlib.sha256(data).hexdigest()[:16]


if __name__ == "__main__":
    with mp.get_context("fork").Pool(2) as pool:
        for n, h in pool.map(work, range(12)):
            print("fork", n, h)
    with mp.get_context("spawn").Pool(2) as pool:
        for n, h in pool.map(work, range(4)):
            print("spawn", n, h)
    blob = bytes(range(256)) * 4096
    out = subprocess.run([sys.executable, "-c",
                          "import sys; d = sys.stdin.buffer.read(); print(len(d), sum(d) % 65521)"],
                         input=blob, capture_output=True, check=True).stdout
    print("stdin child", out.decode().strip())
    sort = subprocess.Popen(["sort", "-n"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    head = subprocess.Popen(["head", "-3"], stdin=sort.stdout, stdout=subprocess.PIPE)
    sort.stdout.close()
    sort.stdin.write("".join("%d\n" % ((i * 7919) % 100003) for i in range(200000)).encode())
    sort.stdin.close()
    print("pipeline", head.communicate()[0].decode().split())
    sort.wait()
    squares = [i * i for i in range(300000)]
    print("squares", sum(squares))
