// The numa:N backend: anonymous memory bound to one NUMA node.
//
// This is the device-coherent case (ZONE_DEVICE coherent pages; today CXL or
// HBM nodes): memory the CPU can address but that belongs to the "device"
// node. Each chunk is mapped anonymous, bound with mbind(MPOL_BIND) to the
// node before it is populated (so the first touch allocates there), and
// THP-advised. There is no file: view().fd is -1 and copies go through the
// mapping. The node is checked first against libnuma's list of nodes with
// memory, so a wrong node is refused with the list in the message, and
// libnuma's own stderr warnings are never triggered.
#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>

#include <memory>

#include "devmem/backend.hpp"
#include "devmem/reservation.hpp"

namespace uhmm::devmem {

namespace {

struct BitmaskDeleter {
    void operator()(bitmask* b) const noexcept { numa_bitmask_free(b); }
};
using Nodemask = std::unique_ptr<bitmask, BitmaskDeleter>;

// "0, 2 (MiB free/total: ...)" — the nodes that have memory.
std::string nodes_with_memory() {
    std::string list;
    for (int n = 0; n <= numa_max_node(); ++n) {
        if (!numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(n))) continue;
        if (!list.empty()) list += ", ";
        list += std::to_string(n);
    }
    return list.empty() ? "none" : list;
}

class NumaBackend final : public ArenaBackend {
public:
    NumaBackend(int node, Nodemask mask, Reservation res)
        : node_(node), mask_(std::move(mask)), res_(std::move(res)) {}

    std::error_code map_chunk(std::size_t index) override {
        if (auto ec = res_.map_anon_chunk(index)) return ec;
        std::byte* at = res_.chunk(index);
        if (::mbind(at, kChunkSize, MPOL_BIND, mask_->maskp, mask_->size + 1, 0) != 0) {
            const auto ec = last_errno();
            res_.unmap_chunk(index);
            return ec;
        }
        ::madvise(at, kChunkSize, MADV_HUGEPAGE);   // advice only
        if (auto ec = populate_write(at, kChunkSize)) {
            res_.unmap_chunk(index);
            return ec;
        }
        return {};
    }

    ArenaView view() const override {
        ArenaView v;
        v.kind = ArenaKind::numa;
        v.base = res_.base();
        return v;
    }

    std::string describe() const override {
        long long free = 0;
        const long long size = numa_node_size64(node_, &free);
        return "anonymous memory bound to NUMA node " + std::to_string(node_) + " (MPOL_BIND; node has " +
               std::to_string(size >> 20) + " MiB, " + std::to_string(free >> 20) + " MiB free)";
    }

private:
    int node_;
    Nodemask mask_;
    Reservation res_;
};

}  // namespace

Result<std::unique_ptr<ArenaBackend>> make_numa_backend(const ArenaSpec& spec, std::string* why) {
    const std::string name = "numa:" + std::to_string(spec.index);
    if (numa_available() < 0) {
        if (why) *why = name + ": NUMA is not available on this system (numa_available() < 0)";
        return errno_code(ENODEV);
    }
    const int node = spec.index;
    if (node > numa_max_node() || !numa_bitmask_isbitset(numa_all_nodes_ptr, static_cast<unsigned>(node))) {
        if (why) {
            *why = name + ": node " + std::to_string(node) +
                   (node > numa_max_node() ? " does not exist" : " has no memory (or is not allowed)") +
                   "; nodes with memory: " + nodes_with_memory();
        }
        return errno_code(ENODEV);
    }
    Nodemask mask(numa_allocate_nodemask());
    numa_bitmask_setbit(mask.get(), static_cast<unsigned>(node));
    auto res = Reservation::create(spec.size);
    if (!res) {
        if (why) *why = describe_error(name + ": reserving address space", res.error());
        return res.error();
    }
    auto backend = std::make_unique<NumaBackend>(node, std::move(mask), std::move(*res));
    return finish_backend(std::move(backend), spec, name, why);
}

}  // namespace uhmm::devmem
