// The runtime's state, shared by its public face (runtime.cpp), the fault and
// event handler (fault_handler.cpp) and the fork guard (fork_guard.cpp).
#pragma once

#include <unistd.h>

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <utility>
#include <vector>

#include <uhmm/copy_engine.hpp>
#include <uhmm/devmem.hpp>
#include <uhmm/fd.hpp>
#include <uhmm/heap.hpp>
#include <uhmm/mirror.hpp>
#include <uhmm/runtime.hpp>
#include <uhmm/uffd.hpp>

#include "base/latency_histogram.hpp"
#include "control/server.hpp"
#include "migrate/host_zapper.hpp"
#include "migrate/migration.hpp"
#include "policy/policy.hpp"
#include "runtime/invalidation_delivery.hpp"
#include "space/mapping_view.hpp"
#include "migrate/self_zaps.hpp"
#include "space/address_space.hpp"

namespace uhmm {

class FaultHandler;
class PrefetchQueue;

struct FaultCounters {
    std::atomic<std::uint64_t> faults{0}, faults_missing{0}, faults_wp{0};
    std::atomic<std::uint64_t> first_touch_faults{0}, device_faults{0}, write_waits{0}, watched_writes{0};
    std::atomic<std::uint64_t> replica_invalidations{0};   // replicas a CPU write dropped
    LatencyHistogram service_ns;   // time the fault thread spends on one fault message
    std::atomic<std::uint64_t> pages_zero_filled{0}, pages_to_host_on_fault{0};
};

struct Runtime::Impl {
    RuntimeConfig config;
    pid_t pid = ::getpid();
    std::atomic<bool> forked_child{false};   // this copy lives in a fork()ed child: inert

    std::unique_ptr<devmem::Arena> arena;
    std::unique_ptr<migrate::CopyEngine> engine;
    std::optional<uffd::Uffd> uffd;
    Fd pagemap;
    devmem::OwnerId owner;
    // Source of zeros for first touches: a read-only anonymous mapping of
    // fault_around bytes (the kernel's zero page behind it, no memory).
    std::byte* zeros = nullptr;
    std::size_t zeros_len = 0;

    // Zaps without Remove events (UFFDIO_MOVE); nullptr before Linux 6.8.
    std::unique_ptr<migrate::HostZapper> zapper;
    migrate::SelfZaps zaps;
    migrate::MigrationCounters migration_counters;
    FaultCounters fault_counters;
    std::optional<migrate::Migration> migration;
    space::AddressSpace space;
    // The mappings as range_fault sees them; every known change bumps it
    // (the fault thread's unmap / remap, manage, unmanage, protect).
    space::MappingView view;
    std::atomic<bool> protection_reported{false};   // protection_hooked(true)
    std::atomic<std::uint64_t> nonblocking_refusals{0};   // non-blockable migrations given up (EAGAIN)
    std::atomic<std::uint64_t> ranges_managed{0};         // manage / allocate successes, over the runtime's life
    // The policy (nullptr for none) and its knobs, replaced by set_policy();
    // the policy's thread is stopped first in ~Runtime. policy_round() and
    // stats() take a reference under the lock and use it outside: a round
    // may be long. Rounds and migrations of policies replaced are kept.
    mutable std::mutex policy_lock;
    std::shared_ptr<policy::Policy> policy;
    PolicyConfig policy_config;
    std::uint64_t retired_rounds = 0, retired_migrations = 0;
    std::shared_ptr<policy::Policy> current_policy() const {
        std::lock_guard lock(policy_lock);
        return policy;
    }
    // Devices' notifiers, and the thread that calls them for what the fault
    // thread sees (declared after the registry: it goes first).
    mirror::NotifierRegistry notifiers;
    std::unique_ptr<InvalidationDelivery> delivery;
    // Devices that asked for migrations, by the small id kept in each DEVICE
    // page's entry (id = index + 1; 0 = none). A full table: 0, the pages
    // are then nobody's in range_fault.
    std::mutex owners_lock;
    std::array<const void*, space::kMaxOwners> owners{};
    std::uint16_t owner_id(const void* who, bool add);
    std::unique_ptr<FaultHandler> handler;
    std::unique_ptr<uffd::Monitor> monitor;
    // Advice accessed_by (advice.cpp): which device maps which interval
    // where its pages are. advise() calls run one at a time (advice_lock),
    // so that a check and the change it allows are one step.
    struct AccessedBy {
        std::uintptr_t start, end;
        mirror::Notifier* device;   // compared, and called only while inserted in `notifiers`
    };
    std::mutex advice_lock;
    mutable std::mutex accessed_by_lock;
    std::vector<AccessedBy> accessed_by;
    // The intervals of [start, end) that `device` maps in place (for range_fault).
    std::vector<std::pair<std::uintptr_t, std::uintptr_t>> in_place_for(const mirror::Notifier* device,
                                                                        std::uintptr_t start,
                                                                        std::uintptr_t end) const;
    // Ask every accessed-by device over [start, end) to map it again (after
    // a migration moved pages there); devices gone are forgotten.
    void repopulate(std::uintptr_t start, std::uintptr_t end);
    // Replicas for the read-mostly HOST pages of [start, end) (range_fault's
    // device reads, prefetch to the device).
    void replicate(std::uintptr_t start, std::uintptr_t end, MigrateResult& out);
    // Asynchronous prefetches (prefetch.cpp), made on first use; stopped
    // first in ~Runtime.
    std::once_flag prefetch_once;
    std::unique_ptr<PrefetchQueue> prefetch_queue;
    std::atomic<std::uint64_t> prefetches{0};
    // Runtime::heap(), made on first use; destroyed first in ~Runtime (it
    // releases its ranges through the runtime).
    std::once_flag heap_once;
    std::unique_ptr<Heap> heap;
    // The control socket (socket=on), stopped before anything it calls.
    std::unique_ptr<control::Server> control;

    // Migrations hold it shared; fork's prepare, unmanage, release and
    // destruction hold it exclusive (no migration may be half done then).
    std::shared_mutex migration_lock;
    // manage / unmanage / allocate / release, one at a time.
    std::mutex manage_lock;

    Impl() = default;
    ~Impl();
    Impl(const Impl&) = delete;
    Impl& operator=(const Impl&) = delete;

    // Bring every device page of `r` home (migration_lock held exclusive);
    // an error (logged) when some could not come.
    std::error_code bring_all_home(space::ManagedRange& r);
    // Before fork(): every device page home, migrations held off until after.
    void prepare_fork();
    void after_fork_parent() noexcept;
    void after_fork_child() noexcept;
};

// The process-wide fork guard (pthread_atfork, registered once).
void fork_guard_add(Runtime::Impl* rt);
void fork_guard_remove(Runtime::Impl* rt);

}  // namespace uhmm
