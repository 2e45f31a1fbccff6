// A program of a user's, built outside the tree against the installed uhmm
// only (`pkg-config --cflags --libs uhmm`): the README's Runtime snippet,
// checked. Exit 0: runtime created, 8 MiB migrated to the device and read
// back right; 77: no userfaultfd here (the reason on stderr); 1: wrong.
#include <uhmm/runtime.hpp>

#include <cstdio>
#include <cstring>
#include <string>

int main() {
    std::string why;
    auto config = uhmm::RuntimeConfig::parse("arena=memfd,arena_size=64M,log=off", &why);
    if (!config) {
        std::fprintf(stderr, "consumer: RuntimeConfig::parse: %s\n", why.c_str());
        return 1;
    }
    auto rt = uhmm::Runtime::create(*config, &why);
    if (!rt) {
        std::fprintf(stderr, "consumer: no runtime here: %s\n", why.c_str());
        return 77;
    }
    constexpr std::size_t len = 8u << 20;
    auto mem = (*rt)->allocate(len);
    if (!mem) return 1;
    auto* p = static_cast<unsigned char*>(*mem);
    for (std::size_t i = 0; i < len; ++i) p[i] = static_cast<unsigned char>(i * 7 + i / 4096);
    const auto moved = (*rt)->migrate(p, len, uhmm::Target::device);
    if (!moved || moved->migrated != len / 4096) {
        std::fprintf(stderr, "consumer: migrate moved %zu pages\n", moved ? moved->migrated : 0);
        return 1;
    }
    if ((*rt)->stats().device_pages != len / 4096) return 1;
    for (std::size_t i = 0; i < len; ++i) {
        if (p[i] != static_cast<unsigned char>(i * 7 + i / 4096)) {
            std::fprintf(stderr, "consumer: byte %zu wrong after the round trip\n", i);
            return 1;
        }
    }
    std::printf("uhmm %s: %zu pages to the device and back, %llu device faults\n",
                std::string(uhmm::Runtime::version()).c_str(), moved->migrated,
                static_cast<unsigned long long>((*rt)->stats().device_faults));
    (void)(*rt)->release(p, len);
    return 0;
}
