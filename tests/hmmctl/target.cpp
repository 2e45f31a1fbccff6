// hmmctl's test target: an ordinary program that knows nothing of uhmm
// (built without any uhmm dependency, run under libuhmm_preload.so by the
// tests). It allocates MiB mebibytes with malloc, fills them with a pattern,
// says where they are, then obeys one command per line on stdin:
//
//   READY <pid> <addr> <len>      printed once filled: the page-aligned part
//                                 of the block, in decimal
//   verify  -> OK | BAD <offset>  every byte compared with the pattern
//   exit N  -> exits with status N (end of input: status 0)
//
// With --hugepage the block is madvise(MADV_HUGEPAGE)d before it is filled
// (the maps test, run without uhmm).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>

namespace {

constexpr std::uintptr_t kPage = 4096;

std::uint64_t pattern(std::uint64_t index) {   // splitmix64 of the word's index
    std::uint64_t z = index * 0x9e3779b97f4a7c15ULL + 0x632be59bd9b4e019ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s MiB [--hugepage]\n", argv[0]);
        return 2;
    }
    const std::size_t bytes = std::strtoull(argv[1], nullptr, 10) << 20;
    const bool hugepage = argc > 2 && std::strcmp(argv[2], "--hugepage") == 0;
    auto* block = static_cast<unsigned char*>(std::malloc(bytes));
    if (!block) {
        std::perror("malloc");
        return 1;
    }
    const std::uintptr_t start = (reinterpret_cast<std::uintptr_t>(block) + kPage - 1) & ~(kPage - 1);
    const std::uintptr_t end = (reinterpret_cast<std::uintptr_t>(block) + bytes) & ~(kPage - 1);
    if (hugepage) (void)::madvise(reinterpret_cast<void*>(start), end - start, MADV_HUGEPAGE);
    auto* words = reinterpret_cast<std::uint64_t*>(start);
    const std::size_t count = (end - start) / 8;
    for (std::size_t i = 0; i < count; ++i) words[i] = pattern(i);
    std::printf("READY %d %lu %lu\n", static_cast<int>(::getpid()), static_cast<unsigned long>(start),
                static_cast<unsigned long>(end - start));
    std::fflush(stdout);

    std::string line;
    while (std::getline(std::cin, line)) {
        if (line == "verify") {
            std::size_t bad = count;
            for (std::size_t i = 0; i < count && bad == count; ++i)
                if (words[i] != pattern(i)) bad = i;
            if (bad == count) std::printf("OK\n");
            else std::printf("BAD %zu\n", bad * 8);
        } else if (line.rfind("exit ", 0) == 0) {
            std::fflush(stdout);
            std::free(block);
            return std::atoi(line.c_str() + 5);
        } else {
            std::printf("UNKNOWN %s\n", line.c_str());
        }
        std::fflush(stdout);
    }
    std::free(block);
    return 0;
}
