// Feature bits by name, for the probe's report and for error messages that say
// exactly which kernel capability is missing.
#include <uhmm/uffd.hpp>

#include <bit>

#include "uffd/compat.hpp"

namespace uhmm::uffd {

namespace {

struct Named { std::uint64_t bit; const char* name; };

constexpr Named kNames[] = {
    {feature::pagefault_flag_wp, "pagefault_flag_wp"},
    {feature::event_fork, "event_fork"},
    {feature::event_remap, "event_remap"},
    {feature::event_remove, "event_remove"},
    {feature::missing_hugetlbfs, "missing_hugetlbfs"},
    {feature::missing_shmem, "missing_shmem"},
    {feature::event_unmap, "event_unmap"},
    {feature::sigbus, "sigbus"},
    {feature::thread_id, "thread_id"},
    {feature::minor_hugetlbfs, "minor_hugetlbfs"},
    {feature::minor_shmem, "minor_shmem"},
    {feature::exact_address, "exact_address"},
    {feature::wp_hugetlbfs_shmem, "wp_hugetlbfs_shmem"},
    {feature::wp_unpopulated, "wp_unpopulated"},
    {feature::poison, "poison"},
    {feature::wp_async, "wp_async"},
    {feature::move, "move"},
};

// Our names must carry the kernel's values.
static_assert(feature::pagefault_flag_wp == UFFD_FEATURE_PAGEFAULT_FLAG_WP);
static_assert(feature::event_fork == UFFD_FEATURE_EVENT_FORK);
static_assert(feature::event_remap == UFFD_FEATURE_EVENT_REMAP);
static_assert(feature::event_remove == UFFD_FEATURE_EVENT_REMOVE);
static_assert(feature::event_unmap == UFFD_FEATURE_EVENT_UNMAP);
static_assert(feature::thread_id == UFFD_FEATURE_THREAD_ID);
static_assert(feature::wp_hugetlbfs_shmem == UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
static_assert(feature::wp_unpopulated == UFFD_FEATURE_WP_UNPOPULATED);
static_assert(feature::poison == UFFD_FEATURE_POISON);
static_assert(feature::wp_async == UFFD_FEATURE_WP_ASYNC);
static_assert(feature::move == UFFD_FEATURE_MOVE);

}  // namespace

std::string feature_names(std::uint64_t features) {
    std::string out;
    for (const auto& n : kNames) {
        if (!(features & n.bit)) continue;
        if (!out.empty()) out += ", ";
        out += n.name;
        features &= ~n.bit;
    }
    // Bits newer than this table: name them by number rather than hide them.
    while (features) {
        const int bit = std::countr_zero(features);
        if (!out.empty()) out += ", ";
        out += "bit" + std::to_string(bit);
        features &= features - 1;
    }
    return out.empty() ? "none" : out;
}

}  // namespace uhmm::uffd
