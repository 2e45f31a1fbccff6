// MappingView (see the header): PROCMAP_QUERY, the maps text as fallback,
// and a small generation-stamped cache.
#include "space/mapping_view.hpp"

#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "space/kernel_abi.hpp"
#include "base/private_fds.hpp"

namespace uhmm::space {

namespace {

bool special_name(const char* name) {
    return std::strncmp(name, "[vvar", 5) == 0 || std::strncmp(name, "[vsyscall]", 10) == 0 ||
           std::strncmp(name, "[vdso]", 6) == 0;
}

std::error_code errno_error(int err) { return {err, std::generic_category()}; }

}  // namespace

MappingView::MappingView() : maps_(base::hide_fd(::open("/proc/self/maps", O_RDONLY | O_CLOEXEC))) {}

MappingView::Counters MappingView::counters() const noexcept {
    return {lookups_.load(std::memory_order_relaxed), hits_.load(std::memory_order_relaxed),
            queries_.load(std::memory_order_relaxed)};
}

std::error_code MappingView::lookup(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out,
                                    const Extent* cache_extent) {
    lookups_.fetch_add(1, std::memory_order_relaxed);
    out.clear();
    auto overlapping = [&](const std::vector<Vma>& vmas) {
        for (const Vma& v : vmas)
            if (v.end > start && v.start < end) out.push_back(v);
    };
    if (!cache_extent) return ask_kernel(start, end, out);
    // Read the generation before asking: a change that lands while the
    // kernel answers leaves the entry stamped with the old value, so it
    // never serves.
    const std::uint64_t gen = generation_.load(std::memory_order_acquire);
    {
        std::lock_guard lock(lock_);
        for (const Entry& e : cache_) {
            if (e.generation != gen || e.start > start || e.end < end) continue;
            overlapping(e.vmas);
            hits_.fetch_add(1, std::memory_order_relaxed);
            return {};
        }
    }
    std::vector<Vma> whole;
    if (auto ec = ask_kernel(cache_extent->start, cache_extent->end, whole)) return ec;
    overlapping(whole);
    std::lock_guard lock(lock_);
    Entry& e = cache_[next_victim_];
    next_victim_ = (next_victim_ + 1) % kEntries;
    e.generation = gen;
    e.start = cache_extent->start;
    e.end = cache_extent->end;
    e.vmas = std::move(whole);
    return {};
}

std::error_code MappingView::ask_kernel(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out) {
    queries_.fetch_add(1, std::memory_order_relaxed);
    if (procmap_query_.load(std::memory_order_relaxed)) {
        const std::error_code ec = ask_procmap_query(start, end, out);
        // ENOTTY / EINVAL: a kernel without the ioctl (or a smaller struct).
        if (!ec || (ec.value() != ENOTTY && ec.value() != EINVAL)) return ec;
        procmap_query_.store(false, std::memory_order_relaxed);
        out.clear();
    }
    return ask_maps_text(start, end, out);
}

std::error_code MappingView::ask_procmap_query(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out) {
    if (!maps_) return errno_error(EBADF);
    char name[4096];   // a file path can be that long; only the special names matter
    for (std::uintptr_t at = start; at < end;) {
        kernel::procmap_query q{};
        q.size = sizeof q;
        q.query_flags = kernel::kCoveringOrNextVma;
        q.query_addr = at;
        q.vma_name_addr = reinterpret_cast<std::uintptr_t>(name);
        q.vma_name_size = sizeof name;
        if (::ioctl(maps_.get(), kernel::kProcmapQuery, &q) != 0) {
            if (errno == ENOENT) break;   // nothing mapped at or after `at`
            return errno_error(errno);
        }
        if (q.vma_start >= end) break;
        Vma v;
        v.start = q.vma_start;
        v.end = q.vma_end;
        v.read = q.vma_flags & kernel::kVmaReadable;
        v.write = q.vma_flags & kernel::kVmaWritable;
        v.shared = q.vma_flags & kernel::kVmaShared;
        v.special = q.vma_name_size > 0 && special_name(name);
        v.page_size = q.vma_page_size ? q.vma_page_size : 4096;
        out.push_back(v);
        at = q.vma_end;
    }
    return {};
}

std::error_code MappingView::ask_maps_text(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out) {
    std::FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f) return errno_error(errno);
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        unsigned long a = 0, b = 0;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &a, &b, perms, &path_at) < 3) continue;
        if (b <= start) continue;
        if (a >= end) break;
        Vma v;
        v.start = a;
        v.end = b;
        v.read = perms[0] == 'r';
        v.write = perms[1] == 'w';
        v.shared = perms[3] == 's';
        v.special = path_at > 0 && special_name(line + path_at);
        out.push_back(v);   // page_size: the text does not say (smaps would); 4 KiB
    }
    std::fclose(f);
    return {};
}

}  // namespace uhmm::space
