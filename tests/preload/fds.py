# What a program sees of its descriptors, and closing all of them: run with
# fd 0 closed, natively and preloaded, the output must be the same.
import os
import subprocess
import sys
import time


def listing():
    return sorted(int(x) for x in os.listdir("/proc/self/fd"))


print("at start", listing())
fd = os.open("/dev/null", os.O_RDONLY)
print("first open", fd)
os.close(fd)
data = bytearray(b"uhmm" * (8 << 20))
r, w = os.pipe()
print("pipe", r, w)
child = subprocess.run(
    [sys.executable, "-c", "import os; print(sorted(int(x) for x in os.listdir('/proc/self/fd')))"],
    pass_fds=(r,), capture_output=True, check=True)
print("child with pass_fds", child.stdout.decode().strip(), child.stderr.decode().strip())
# What daemons do at start: close everything but the standard streams.
os.closerange(3, 1 << 20)
for n in range(3, 4096):
    try:
        os.close(n)
    except OSError:
        pass
try:
    os.dup2(1, 1000)
    print("dup2 onto 1000 works")
    os.close(1000)
except OSError as e:
    print("dup2 onto 1000:", e)
time.sleep(0.3)   # a chaos policy moves pages after the close
print("after closerange", data.count(b"uhmm"), listing())
