# Keeps more memory than a small arena can hold while a chaos policy moves
# it: sorts 600k floats and fills a 64 MiB bytearray, then checks both.
# The preload tests run it with the arena exhausted mid-run (a huge page
# pool with one free page, a 2 MiB memfd or NUMA arena); pages that cannot
# move must stay on the host with their data.
import random

random.seed(1)
floats = [random.random() for _ in range(600000)]
floats.sort()
buf = bytearray(64 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = i % 251
print(round(sum(floats[:1000]), 9), sum(buf[::4096]), all(floats[i] <= floats[i + 1] for i in range(len(floats) - 1)))
print(sum(buf[i] for i in range(0, len(buf), 4096)) == sum(i % 251 for i in range(0, len(buf), 4096)))
