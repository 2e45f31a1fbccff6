// Test arenas built by hand from real memory, so that the copy engine is
// tested without lib/devmem: a shmem memfd, a MFD_HUGETLB memfd, anonymous
// memory (the numa kind), plus host buffers filled with a known pattern.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include <uhmm/arena_view.hpp>
#include <uhmm/copy_engine.hpp>
#include <uhmm/fd.hpp>

namespace uhmm::test {

inline constexpr std::size_t kPage = devmem::kPageSize;

// A mapping owned by the test (munmap on destruction).
class Mapping {
public:
    Mapping() = default;
    Mapping(std::byte* p, std::size_t n) : p_(p), n_(n) {}
    Mapping(Mapping&& o) noexcept : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}
    Mapping& operator=(Mapping&& o) noexcept {
        std::swap(p_, o.p_);
        std::swap(n_, o.n_);
        return *this;
    }
    ~Mapping() {
        if (p_) ::munmap(p_, n_);
    }
    std::byte* data() const { return p_; }
    std::size_t size() const { return n_; }
    std::span<std::byte> bytes() const { return {p_, n_}; }

private:
    std::byte* p_ = nullptr;
    std::size_t n_ = 0;
};

inline Mapping map_anon(std::size_t bytes) {
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return {};
    return {static_cast<std::byte*>(p), bytes};
}

// A file-backed arena as lib/devmem would hand it to an engine.
struct FileArena {
    Fd fd;
    Mapping map;
    devmem::ArenaView view;

    // size bytes of a shmem (or hugetlb) memfd, populated, ArenaView filled in.
    static std::optional<FileArena> create(std::size_t size, bool hugetlb = false) {
        FileArena a;
        a.fd = Fd(::memfd_create("uhmm-test-arena", MFD_CLOEXEC | (hugetlb ? MFD_HUGETLB : 0u)));
        if (!a.fd) return std::nullopt;
        if (::ftruncate(a.fd.get(), static_cast<off_t>(size)) != 0) return std::nullopt;
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, a.fd.get(), 0);
        if (p == MAP_FAILED) return std::nullopt;
        a.map = Mapping(static_cast<std::byte*>(p), size);
        a.view.kind = hugetlb ? devmem::ArenaKind::hugetlb : devmem::ArenaKind::memfd;
        a.view.fd = a.fd.get();
        a.view.base = a.map.data();
        a.view.size = size;
        return a;
    }
};

// The numa kind: anonymous memory, no file.
struct AnonArena {
    Mapping map;
    devmem::ArenaView view;
    static AnonArena create(std::size_t size) {
        AnonArena a;
        a.map = map_anon(size);
        a.view.kind = devmem::ArenaKind::numa;
        a.view.base = a.map.data();
        a.view.size = size;
        return a;
    }
};

// Byte i of pattern `seed`: differs between pages and between seeds, so a
// page copied to the wrong place or twice shows.
inline std::byte pattern(std::uint32_t seed, std::size_t i) {
    std::uint64_t x = (std::uint64_t{seed} << 40) ^ (i / 8) * 0x9E3779B97F4A7C15ull;
    x ^= x >> 29;
    return static_cast<std::byte>(x >> (8 * (i % 8)));
}

inline void fill(std::span<std::byte> b, std::uint32_t seed) {
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = pattern(seed, i);
}

// Index of the first byte that differs from the pattern, or -1.
inline long mismatch(std::span<const std::byte> b, std::uint32_t seed) {
    for (std::size_t i = 0; i < b.size(); ++i)
        if (b[i] != pattern(seed, i)) return static_cast<long>(i);
    return -1;
}

inline std::uint64_t checksum(std::span<const std::byte> b) {
    std::uint64_t h = 1469598103934665603ull;
    for (auto c : b) h = (h ^ static_cast<std::uint8_t>(c)) * 1099511628211ull;
    return h;
}

// Huge pages added to the pool for one test binary and given back after.
// Relative (add N, take N) rather than "restore the old value", because other
// test binaries may reserve their own at the same time.
class HugePageReservation {
public:
    static constexpr const char* kKnob = "/proc/sys/vm/nr_hugepages";
    ~HugePageReservation() {
        if (added_ > 0) write(read() - added_);
    }
    // Why not, or nullopt when `pages` more free huge pages are available.
    std::optional<std::string> reserve(long pages) {
        const long before = read();
        if (before < 0) return std::string("cannot read ") + kKnob;
        if (!write(before + pages)) return std::string("cannot write ") + kKnob + " (needs root)";
        added_ = read() - before;
        if (added_ < pages) return "the kernel reserved " + std::to_string(added_) + " of " + std::to_string(pages) +
                                   " huge pages (memory too fragmented?)";
        return std::nullopt;
    }

private:
    static long read() {
        std::ifstream in(kKnob);
        long v = -1;
        in >> v;
        return in ? v : -1;
    }
    static bool write(long v) {
        std::ofstream out(kKnob);
        out << v << '\n';
        out.flush();
        return static_cast<bool>(out);
    }
    long added_ = 0;
};

inline const char* kind_name(migrate::EngineKind k) { return migrate::to_string(k).data(); }

}  // namespace uhmm::test
