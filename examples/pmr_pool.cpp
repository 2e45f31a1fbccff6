// std::pmr on managed memory: a pool resource upstreamed to
// uhmm::memory_resource, a map of strings built in it, every managed range
// sent to the device, then the map read on the CPU (each page comes home on
// its first touch) and checked against what was put in.
//
//   pmr_pool [ENTRIES]        (the runtime's configuration from UHMM_CONF)
//
// Prints a short report; exits 0 when every entry came back intact, 1 when
// not, 77 when the runtime cannot start here (no userfaultfd).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory_resource>
#include <string>
#include <string_view>

#include <uhmm/memory_resource.hpp>
#include <uhmm/runtime.hpp>

namespace {

// The text of entry `i`: long enough that the string keeps it on the heap
// (past the small-string buffer), different for every entry.
std::string text_of(int i) { return "entry " + std::to_string(i) + ": " + std::string(20 + i % 50, 'a' + i % 26); }

}  // namespace

int main(int argc, char** argv) {
    const int entries = argc > 1 ? std::atoi(argv[1]) : 100000;
    std::string why;
    const char* conf = std::getenv("UHMM_CONF");
    auto config = uhmm::RuntimeConfig::parse(conf ? conf : "", &why);
    if (!config) {
        std::fprintf(stderr, "pmr_pool: UHMM_CONF: %s\n", why.c_str());
        return 2;
    }
    auto rt = uhmm::Runtime::create(*config, &why);
    if (!rt) {
        std::fprintf(stderr, "pmr_pool: no runtime: %s (%s)\n", rt.error().message().c_str(), why.c_str());
        const auto e = rt.error().value();
        return e == EPERM || e == ENOSYS ? 77 : 1;
    }
    uhmm::Runtime& runtime = **rt;
    int bad = 0;
    {
        // The pool carves many small blocks out of a few big ones it asks
        // the upstream for; the upstream packs those into managed chunks.
        uhmm::memory_resource managed(runtime);
        std::pmr::unsynchronized_pool_resource pool(&managed);
        std::pmr::map<int, std::pmr::string> map(&pool);
        for (int i = 0; i < entries; ++i) map.emplace(i, text_of(i));

        // Everything the heap holds (its chunks and any large range) goes
        // to device memory: the CPU page tables no longer map it.
        std::size_t moved = 0;
        for (const auto& r : runtime.ranges()) {
            auto m = runtime.migrate(reinterpret_cast<void*>(r.start), r.len, uhmm::Target::device);
            if (!m || m->failed) {
                std::fprintf(stderr, "pmr_pool: migrate: %s\n", m ? m->error.message().c_str() : m.error().message().c_str());
                return 1;
            }
            moved += m->migrated;
        }
        const auto before = runtime.stats();

        // Plain CPU reads: every touched device page faults and comes home.
        int seen = 0;
        for (const auto& [key, text] : map) {
            bad += key != seen || std::string_view(text) != text_of(seen);
            ++seen;
        }
        bad += seen != entries;
        const auto after = runtime.stats();
        const auto heap = runtime.heap().stats();
        std::printf("pmr_pool: %d entries in %llu chunk(s) of managed memory (%llu spans, %llu objects)\n", entries,
                    static_cast<unsigned long long>(heap.chunks), static_cast<unsigned long long>(heap.spans),
                    static_cast<unsigned long long>(heap.small_objects));
        std::printf("  %zu pages to the device; reading brought %llu home in %llu faults\n", moved,
                    static_cast<unsigned long long>(after.pages_to_host_on_fault - before.pages_to_host_on_fault),
                    static_cast<unsigned long long>(after.device_faults - before.device_faults));
        if (after.device_faults == before.device_faults) {
            std::fprintf(stderr, "pmr_pool: the map was read without a single device fault\n");
            bad += 1;
        }
    }   // map, pool and resource go before the runtime
    std::printf("  %s\n", bad ? "DAMAGED" : "every entry intact");
    return bad ? 1 : 0;
}
