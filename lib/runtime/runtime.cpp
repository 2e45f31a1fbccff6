// uhmm::Runtime: creation, managed ranges, migration requests, queries and
// teardown. The fault path is fault_handler.cpp; the migration path is
// lib/migrate/migration.cpp; fork is fork_guard.cpp.
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <limits>
#include <mutex>
#include <thread>
#include <vector>

#include "base/log.hpp"
#include "mirror/range_fault.hpp"
#include "policy/chaos_policy.hpp"
#include "policy/tier_policy.hpp"
#include "runtime/fault_handler.hpp"
#include "runtime/prefetch_queue.hpp"
#include "runtime/reader_placement.hpp"
#include "runtime/runtime_impl.hpp"
#include "space/proc_maps.hpp"
#include "base/private_fds.hpp"

namespace uhmm {

using space::kPage;

namespace {

std::error_code fail(std::string* why, std::error_code ec, std::string text) {
    if (why) *why = std::move(text);
    return ec;
}
std::error_code fail(std::string* why, int err, std::string text) { return fail(why, errno_code(err), std::move(text)); }

bool aligned(std::uintptr_t v) { return v % kPage == 0; }

// What the runtime asks of the kernel. Not EVENT_FORK (see fork_guard.cpp;
// it also needs CAP_SYS_PTRACE), not WP_UNPOPULATED (the runtime protects
// only present pages; markers on holes would turn first touches into WP faults).
constexpr std::uint64_t kWanted =
    uffd::feature::uhmm_default & ~(uffd::feature::event_fork | uffd::feature::wp_unpopulated);
constexpr std::uint64_t kRequired = uffd::feature::pagefault_flag_wp | uffd::feature::event_remove |
                                    uffd::feature::event_unmap | uffd::feature::event_remap;

}  // namespace

// ---- teardown ------------------------------------------------------------------------

std::error_code Runtime::Impl::bring_all_home(space::ManagedRange& r) {
    // Replicas go too, their protection lifted: the range leaves the
    // runtime's hands (or the runtime goes) with plain host pages.
    for (std::size_t p = 0; p < r.pages();) {
        const std::size_t end = r.block_end(p);
        std::lock_guard lock(r.lock_for(p));
        for (; p < end; ++p)
            if (migration->drop_replica_locked(r.entry(p)))
                (void)uffd->writeprotect(reinterpret_cast<void*>(r.address_of(p)), kPage, false);
    }
    MigrateResult result;
    migration->to_host(r, 0, r.pages(), result);
    if (!result.failed) return {};
    log::get().error("range {:#x}+{}: {} device pages could not come home: {}", r.start(), r.bytes(), result.failed,
                     result.error.message());
    return result.error ? result.error : errno_code(EIO);
}

Runtime::Impl::~Impl() {
    // Order matters: the readers stop before the handler and the tables go,
    // copies in flight finish before the arena goes.
    if (monitor) monitor->stop(true);
    monitor.reset();
    handler.reset();
    delivery.reset();   // after the readers, which post to it
    migration.reset();
    engine.reset();
    if (zeros) ::munmap(zeros, zeros_len);
}

Runtime::Runtime(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Runtime::~Runtime() {
    if (!impl_) return;
    if (impl_->forked_child.load(std::memory_order_acquire) || impl_->pid != ::getpid()) {
        // A fork()ed child's copy: no threads to stop, descriptors not its
        // own. Leave it be.
        (void)impl_.release();
        return;
    }
    impl_->control.reset();   // no request may start either
    impl_->prefetch_queue.reset();   // queued prefetches cancelled, the running one finished
    impl_->heap.reset();             // gives its ranges back through this runtime
    {
        // No round may start while the runtime goes (one running from
        // policy_round() holds its own reference and finishes first: the
        // caller must not destroy a runtime it is still calling).
        std::lock_guard lock(impl_->policy_lock);
        impl_->policy.reset();
    }
    fork_guard_remove(impl_.get());
    {
        // munmap returns once its Unmap event is read: let it be handled, so
        // that pages of memory already gone are not looked for.
        impl_->monitor->wait_events_handled();
        // Devices first drop everything (the kernel's release), then the
        // pages come home.
        impl_->delivery->drain();
        (void)impl_->notifiers.invalidate({0, ~std::uintptr_t{0}, mirror::Event::release, true, nullptr});
        std::unique_lock lock(impl_->migration_lock);
        std::vector<space::RangeRef> ranges;
        impl_->space.snapshot(ranges);
        for (auto& r : ranges) (void)impl_->bring_all_home(*r);   // said in the log; nothing else to do
    }
    impl_.reset();
}

// ---- creation -------------------------------------------------------------------------

Result<std::unique_ptr<Runtime>> Runtime::create(const RuntimeConfig& config, std::string* why) {
    // First: what the layers below say while they are built (an arena's
    // fallback, an engine's) must already obey log=.
    (void)log::set_level(config.log);
    const auto& probe = uffd::probe();
    if (!probe.available) return fail(why, probe.error.value() ? probe.error.value() : EPERM, probe.reason);

    auto impl = std::make_unique<Impl>();
    impl->config = config;
    auto u = uffd::Uffd::open({kWanted, kRequired});
    if (!u) {
        if (u.error() == std::errc::not_supported)
            return fail(why, ENOTSUP, "userfaultfd: this kernel lacks write-protect faults on anonymous memory "
                                      "or the REMOVE/UNMAP/REMAP events (needs Linux 5.7+)");
        return fail(why, u.error(), "userfaultfd: " + u.error().message());
    }
    impl->uffd.emplace(std::move(*u));

    std::string arena_why;
    auto arena = devmem::Arena::create(config.arena, &arena_why);
    if (!arena) return fail(why, arena.error(), "arena: " + arena_why);
    impl->arena = std::move(*arena);

    // Staging buffers serve only arenas the runtime cannot map (GPU memory:
    // pages come home through them). Elsewhere they would be 8 MiB faulted
    // in and pinned at every start, for nothing: a few ms of each
    // preloaded exec.
    migrate::EngineOptions engine_options;
    if (impl->arena->view().base != nullptr) engine_options.staging_slots = 0;
    auto engine = migrate::make_copy_engine(config.engine, impl->arena->view(), engine_options);
    if (!engine) return fail(why, engine.error(), "engine: " + engine.error().message());
    impl->engine = std::move(*engine);

    auto owner = impl->arena->add_owner(impl.get());
    if (!owner) return fail(why, owner.error(), "arena owner: " + owner.error().message());
    impl->owner = *owner;

    impl->pagemap.reset(base::hide_fd(::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC)));
    if (!impl->pagemap) return fail(why, errno, "cannot open /proc/self/pagemap: " + last_errno().message());

    impl->zeros_len = devmem::kChunkSize;
    void* z = ::mmap(nullptr, impl->zeros_len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (z == MAP_FAILED) return fail(why, errno, "cannot map the zero source: " + last_errno().message());
    impl->zeros = static_cast<std::byte*>(z);

    std::string zapper_why;
    impl->zapper = migrate::HostZapper::create(&zapper_why);
    if (!impl->zapper) {
        static std::once_flag said;
        std::call_once(said, [&] {
            log::get().info("host pages are zapped with MADV_DONTNEED ({}): an application DONTNEED racing with a "
                            "migration of the same pages can be mistaken for the runtime's own", zapper_why);
        });
    }

    impl->migration.emplace(migrate::MigrationContext{*impl->uffd, *impl->arena, impl->owner, *impl->engine,
                                                      impl->pagemap.get(), impl->zapper.get(), impl->zaps, impl->migration_counters,
                                                      config.migrate_batch / kPage,
                                                      [rt = impl.get()] { rt->monitor->wait_events_handled(); }});
    impl->delivery = std::make_unique<InvalidationDelivery>(impl->notifiers);
    impl->handler = std::make_unique<FaultHandler>(*impl);
    impl->monitor = std::make_unique<uffd::Monitor>(*impl->uffd, *impl->handler,
                                                    place_readers(config.fault_threads));
    if (auto ec = impl->monitor->start()) return fail(why, ec, "fault threads: " + ec.message());
    fork_guard_add(impl.get());
    std::unique_ptr<Runtime> rt(new Runtime(std::move(impl)));
    (void)rt->set_policy(config.policy);
    if (config.socket) {
        std::string socket_why;
        auto server = control::Server::start(*rt, &socket_why);
        if (server) rt->impl_->control = std::move(*server);
        else if (server.error() == std::errc::address_in_use)
            log::get().debug("control socket: {} (another runtime of this process)", socket_why);
        else
            log::get().info("control socket: {}; hmmctl cannot reach this process", socket_why);
    }
    return rt;
}

// ---- managed ranges -----------------------------------------------------------------------

namespace {

// munmap left holes in managed ranges ([start, end) is new memory there):
// cut them out, so the new memory can be managed on its own. EEXIST when any
// page of [start, end) is still managed memory.
std::error_code carve_out_holes(Runtime::Impl& rt, std::uintptr_t start, std::uintptr_t end) {
    std::unique_lock migrations(rt.migration_lock);
    for (space::RangeRef r = rt.space.first_ending_after(start); r && r->start() < end;
         r = rt.space.first_ending_after(start)) {
        // Every block locked: no fault or event changes the table while it is
        // copied into the pieces (one that waited finds the range dead).
        std::vector<std::unique_lock<std::mutex>> locks;
        for (std::size_t p = 0; p < r->pages(); p = r->block_end(p)) locks.emplace_back(r->lock_for(p));
        const std::uintptr_t a = std::max(start, r->start()), b = std::min(end, r->end());
        for (std::size_t p = r->index_of(a); p < r->index_of(b); ++p)
            if (!(r->entry(p).flags & space::kUnmapped)) return errno_code(EEXIST);
        auto piece = [&](std::uintptr_t from, std::uintptr_t to) -> space::ManagedRange* {
            if (from >= to) return nullptr;
            auto* n = space::ManagedRange::create(from, (to - from) / kPage, r->owned());
            if (!n) return nullptr;
            for (std::size_t p = 0; p < n->pages(); ++p) n->entry(p) = r->entry(r->index_of(from) + p);
            return n;
        };
        auto* left = piece(r->start(), a);
        auto* right = piece(b, r->end());
        if ((r->start() < a && !left) || (b < r->end() && !right)) {
            if (left) left->put();
            if (right) right->put();
            return errno_code(ENOMEM);
        }
        rt.space.replace(r.get(), {left, right});
    }
    return {};
}

// What the caller knows of the memory: nothing (manage: /proc/self/smaps
// checks it), or that it mapped it itself, private and anonymous (allocate,
// manage_fresh: no smaps read, which costs as much as every mapping listed).
enum class Origin : std::uint8_t { unknown, fresh, owned };

std::error_code manage_locked(Runtime::Impl& rt, void* addr, std::size_t len, Origin origin, std::string* why) {
    const bool owned = origin == Origin::owned;
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || !aligned(start) || !aligned(len))
        return fail(why, EINVAL, "manage: address and length must be non-zero multiples of 4096");
    if (start + len < start) return fail(why, EINVAL, "manage: the range wraps around the address space");
    // munmap returns once its event is read, maybe before it is handled:
    // memory mapped again at that address may still look managed. Let the
    // events already read be handled before calling it an overlap.
    if (rt.space.overlaps(start, start + len)) rt.monitor->wait_events_handled();
    if (rt.space.overlaps(start, start + len)) {
        if (auto ec = carve_out_holes(rt, start, start + len))
            return fail(why, ec, ec == std::errc::file_exists
                                     ? "manage: the range overlaps memory the runtime already manages"
                                     : "manage: cannot cut munmap holes out of managed ranges: " + ec.message());
    }
    // Fresh memory may already carry this runtime's registration (the part
    // of a managed mapping that mremap grew): UFFDIO_REGISTER then succeeds
    // again, and says EBUSY only for another userfaultfd's memory.
    if (origin == Origin::unknown)
        if (auto ec = space::check_manageable(start, start + len, why)) return ec;

    // 4 KiB pages: each is protected, copied and zapped on its own.
    (void)::madvise(addr, len, MADV_NOHUGEPAGE);
    space::ManagedRange* r = space::ManagedRange::create(start, len / kPage, owned);
    if (!r) return fail(why, ENOMEM, "manage: no memory for the page table");
    // What is there already is HOST (the rest stays NONE).
    std::vector<std::uint64_t> pm(std::min<std::size_t>(len / kPage, 1 << 16));
    for (std::size_t p = 0; p < r->pages(); p += pm.size()) {
        const std::size_t n = std::min(pm.size(), r->pages() - p);
        if (space::read_pagemap(rt.pagemap.get(), r->address_of(p), n, pm.data())) break;
        for (std::size_t k = 0; k < n; ++k)
            if (pm[k] & (space::kPagemapPresent | space::kPagemapSwapped)) r->entry(p + k).state = PageState::host;
    }
    auto reg = rt.uffd->register_range(addr, len, uffd::Mode::missing | uffd::Mode::wp);
    if (!reg) {
        r->put();
        return fail(why, reg.error(), "manage: userfaultfd registration refused: " + reg.error().message());
    }
    if (!rt.space.insert(r)) {
        (void)rt.uffd->unregister_range(addr, len);
        r->put();
        return fail(why, EEXIST, "manage: the range overlaps memory the runtime already manages");
    }
    rt.view.changed();   // registration split the mapping; the cache's intervals now read as managed
    rt.ranges_managed.fetch_add(1, std::memory_order_relaxed);
    return {};
}

std::error_code child_refusal() { return errno_code(ECHILD); }

}  // namespace

std::error_code Runtime::manage(void* addr, std::size_t len, std::string* why) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    std::lock_guard lock(impl_->manage_lock);
    return manage_locked(*impl_, addr, len, Origin::unknown, why);
}

std::error_code Runtime::manage_fresh(void* addr, std::size_t len) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    std::lock_guard lock(impl_->manage_lock);
    return manage_locked(*impl_, addr, len, Origin::fresh, nullptr);
}

std::error_code Runtime::unmanage(void* addr, std::size_t len) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    std::lock_guard lock(impl_->manage_lock);
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    auto r = impl_->space.find(start);
    if (!r || r->start() != start || r->bytes() != len) return errno_code(ENOENT);
    std::unique_lock migrations(impl_->migration_lock);
    // A page that cannot come home would be lost once unregistered: keep
    // the range managed and say so.
    if (auto ec = impl_->bring_all_home(*r)) return ec;
    (void)impl_->uffd->unregister_range(addr, len);
    impl_->space.remove(r.get());
    impl_->view.changed();
    return {};
}

Result<void*> Runtime::allocate(std::size_t len) { return allocate(len, kPage); }

Result<void*> Runtime::allocate(std::size_t len, std::size_t alignment) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    if (len == 0 || len > (std::size_t{1} << 47)) return errno_code(EINVAL);
    if (alignment < kPage || (alignment & (alignment - 1)) || alignment > (std::size_t{1} << 40))
        return errno_code(EINVAL);
    len = (len + kPage - 1) / kPage * kPage;
    // Over-map by the alignment and trim both ends.
    const std::size_t extra = alignment > kPage ? alignment : 0;
    void* m = ::mmap(nullptr, len + extra, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) return last_errno();
    auto a = reinterpret_cast<std::uintptr_t>(m);
    const std::uintptr_t start = (a + alignment - 1) & ~(std::uintptr_t{alignment} - 1);
    if (start > a) ::munmap(m, start - a);
    if (a + len + extra > start + len) ::munmap(reinterpret_cast<void*>(start + len), a + len + extra - start - len);
    void* p = reinterpret_cast<void*>(start);
    std::lock_guard lock(impl_->manage_lock);
    if (auto ec = manage_locked(*impl_, p, len, Origin::owned, nullptr)) {
        ::munmap(p, len);
        return ec;
    }
    return p;
}

std::error_code Runtime::release(void* addr, std::size_t len) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    std::lock_guard lock(impl_->manage_lock);
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    len = (len + kPage - 1) / kPage * kPage;
    auto r = impl_->space.find(start);
    if (!r || r->start() != start || r->bytes() != len) return errno_code(ENOENT);
    if (!r->owned()) return errno_code(EINVAL);
    std::unique_lock migrations(impl_->migration_lock);
    (void)impl_->uffd->unregister_range(addr, len);
    impl_->space.remove(r.get());
    ::munmap(addr, len);
    impl_->view.changed();
    // The memory is gone: its device pages are just freed.
    for (std::size_t p = 0; p < r->pages(); ++p) {
        std::lock_guard block(r->lock_for(p));
        (void)impl_->migration->drop_replica_locked(r->entry(p));
        if (r->entry(p).state == PageState::device) (void)impl_->arena->put(r->entry(p).device);
        r->entry(p).state = PageState::none;
    }
    migrations.unlock();
    // Unregistered first, this munmap sent no userfaultfd event: tell the
    // mirrors here (a device holding a reference keeps its page until it
    // lets go, as with any unmap).
    (void)impl_->notifiers.invalidate({start, start + len, mirror::Event::unmap, true, nullptr});
    return {};
}

Heap& Runtime::heap() {
    std::call_once(impl_->heap_once, [this] { impl_->heap = std::make_unique<Heap>(*this); });
    return *impl_->heap;
}

// ---- migration requests ----------------------------------------------------------------------

Result<MigrateResult> Runtime::migrate(void* addr, std::size_t len, Target to, const void* owner) {
    return migrate(addr, len, to, MigrateOptions{owner, true});
}

namespace {

// A non-blockable migration whose mirrors answer "would block" backs off
// and asks again this many times, then gives up (EAGAIN) rather than wait:
// the caller (a background policy) comes back later.
constexpr std::chrono::microseconds kNonBlockableBackoff[] = {
    std::chrono::microseconds(50), std::chrono::microseconds(200), std::chrono::microseconds(1000)};

}  // namespace

Result<MigrateResult> Runtime::migrate(void* addr, std::size_t len, Target to, const MigrateOptions& options) {
    const void* owner = options.owner;
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || !aligned(start) || !aligned(len) || start + len < start) return errno_code(EINVAL);
    const auto t0 = std::chrono::steady_clock::now();

    std::shared_lock migrations(impl_->migration_lock);
    // The whole request must be managed, or nothing is done.
    struct Piece {
        space::RangeRef range;
        std::size_t first, count;
    };
    std::vector<Piece> pieces;
    for (std::uintptr_t at = start; at < start + len;) {
        auto r = impl_->space.find(at);
        if (!r) return errno_code(EFAULT);
        const std::uintptr_t stop = std::min(start + len, r->end());
        pieces.push_back({r, r->index_of(at), (stop - at) / kPage});
        at = stop;
    }
    // Mirrors first (migrate_vma_setup's MMU_NOTIFY_MIGRATE): the device
    // that asked passes itself as owner and skips its own. The window stays
    // open until the pages have moved: a device looking them up meanwhile
    // waits (read_begin) or starts again (read_retry), as under the kernel's
    // invalidate_range_start .. _end, rather than map a page in flight.
    const mirror::Invalidation inv{start, start + len, mirror::Event::migrate, options.blockable, owner};
    mirror::NotifierRegistry::Window window;
    for (std::size_t attempt = 0;; ++attempt) {
        if (impl_->notifiers.start(inv, window) == mirror::NotifierRegistry::Outcome::done) break;
        if (attempt == std::size(kNonBlockableBackoff)) {
            MigrateResult refused;
            for (const auto& piece : pieces) refused.requested += piece.count;
            refused.failed = refused.requested;
            refused.error = std::make_error_code(std::errc::resource_unavailable_try_again);
            refused.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            impl_->nonblocking_refusals.fetch_add(1, std::memory_order_relaxed);
            return refused;
        }
        migrations.unlock();   // back off without holding off fork or unmanage
        std::this_thread::sleep_for(kNonBlockableBackoff[attempt]);
        migrations.lock();
    }
    MigrateResult result;
    const std::uint16_t who = to == Target::device ? impl_->owner_id(owner, true) : 0;
    for (auto& piece : pieces) {
        if (to == Target::device) impl_->migration->to_device(*piece.range, piece.first, piece.count, result, who);
        else impl_->migration->to_host(*piece.range, piece.first, piece.count, result);
    }
    window.end();
    migrations.unlock();
    // Devices advised accessed_by map the pages where they are now (not
    // from a background policy: a device's lock may be busy).
    if (options.blockable && result.migrated) impl_->repopulate(start, start + len);
    result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return result;
}

mirror::NotifierRegistry& Runtime::notifiers() noexcept { return impl_->notifiers; }

std::error_code Runtime::protect(void* addr, std::size_t len, int prot) {
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || !aligned(start) || start + len < start) return errno_code(EINVAL);
    len = (len + kPage - 1) / kPage * kPage;
    // The change first, then the mirrors (as the kernel's change_protection
    // does under its notifier): a device that faults in between sees the new
    // protection already, one that mapped before is told to drop its entry.
    // A failed mprotect may have changed part of the range: tell them anyway.
    const int rc = ::mprotect(addr, len, prot);
    const int err = errno;
    impl_->view.changed();
    if (!impl_->forked_child.load(std::memory_order_acquire))
        (void)impl_->notifiers.invalidate({start, start + len, mirror::Event::protection, true, nullptr});
    return rc == 0 ? std::error_code{} : errno_code(err);
}

void Runtime::protection_hooked(bool every_mprotect_reported) noexcept {
    impl_->view.changed();
    impl_->protection_reported.store(every_mprotect_reported, std::memory_order_release);
}

namespace {
std::error_code device_copy(Runtime::Impl& rt, migrate::Direction dir, std::uint64_t page, std::size_t offset,
                            void* host, std::size_t len) {
    if (page > std::numeric_limits<devmem::PageIndex>::max() || offset >= kPage || len > kPage - offset || !len)
        return errno_code(EINVAL);
    const auto index = static_cast<devmem::PageIndex>(page);
    // A reference for the copy: refuses a free page, keeps it from reuse.
    if (auto ec = rt.arena->get(index)) return errno_code(EINVAL);
    const migrate::CopyOp op{host, devmem::ArenaView::offset_of(index) + offset, static_cast<std::uint32_t>(len)};
    rt.engine->set_arena_size(rt.arena->view().size);
    auto fence = rt.engine->submit(dir, {&op, 1});
    auto ec = fence.wait();
    (void)rt.arena->put(index);
    return ec;
}
}  // namespace

namespace {
// Whether an entry's device page is `page`: a DEVICE page, or (for reading)
// a read-mostly page's finished replica.
bool holds_page(const space::PageEntry& e, std::uint64_t page, bool replica_ok) {
    if (e.device != page) return false;
    if (e.state == PageState::device) return true;
    return replica_ok && e.state == PageState::host && (e.flags & space::kReplica) &&
           !(e.flags & space::kReplicaFilling);
}
}  // namespace

std::error_code Runtime::device_page_get(std::uint64_t page) {
    if (page > std::numeric_limits<devmem::PageIndex>::max()) return errno_code(EINVAL);
    return impl_->arena->get(static_cast<devmem::PageIndex>(page)) ? errno_code(EINVAL) : std::error_code{};
}

std::error_code Runtime::device_page_hold(const void* addr, std::uint64_t page) {
    const auto a = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    auto r = impl_->space.find(a);
    if (!r) return errno_code(ESTALE);
    const std::size_t i = r->index_of(a);
    std::lock_guard lock(r->lock_for(i));
    if (r->dead() || !holds_page(r->entry(i), page, true)) return errno_code(ESTALE);
    return impl_->arena->get(static_cast<devmem::PageIndex>(page)) ? errno_code(ESTALE) : std::error_code{};
}

std::error_code Runtime::device_page_put(std::uint64_t page) {
    if (page > std::numeric_limits<devmem::PageIndex>::max()) return errno_code(EINVAL);
    return impl_->arena->put(static_cast<devmem::PageIndex>(page)) ? errno_code(EINVAL) : std::error_code{};
}

std::error_code Runtime::device_page_read(std::uint64_t page, std::size_t offset, void* dst, std::size_t len) {
    return device_copy(*impl_, migrate::Direction::to_host, page, offset, dst, len);
}

std::error_code Runtime::device_page_write(std::uint64_t page, std::size_t offset, const void* src, std::size_t len) {
    return device_copy(*impl_, migrate::Direction::to_device, page, offset, const_cast<void*>(src), len);
}

namespace {
// device_copy while `addr` still has `page`, under its block lock: the
// fault thread brings a page home under the same lock, so the copy lands
// wholly before (and comes home with the page) or finds it gone (ESTALE).
std::error_code device_copy_at(Runtime::Impl& rt, const void* addr, migrate::Direction dir, std::uint64_t page,
                               std::size_t offset, void* host, std::size_t len) {
    const auto a = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    auto r = rt.space.find(a);
    if (!r) return errno_code(ESTALE);
    const std::size_t i = r->index_of(a);
    std::lock_guard lock(r->lock_for(i));
    // A replica is read-only: a device writes only to pages it migrated.
    if (r->dead() || !holds_page(r->entry(i), page, dir == migrate::Direction::to_host)) return errno_code(ESTALE);
    return device_copy(rt, dir, page, offset, host, len);
}
}  // namespace

std::error_code Runtime::device_page_read(const void* addr, std::uint64_t page, std::size_t offset, void* dst,
                                          std::size_t len) {
    return device_copy_at(*impl_, addr, migrate::Direction::to_host, page, offset, dst, len);
}

std::error_code Runtime::device_page_write(const void* addr, std::uint64_t page, std::size_t offset, const void* src,
                                           std::size_t len) {
    return device_copy_at(*impl_, addr, migrate::Direction::to_device, page, offset, const_cast<void*>(src), len);
}

std::uint16_t Runtime::Impl::owner_id(const void* who, bool add) {
    if (!who) return 0;
    std::lock_guard lock(owners_lock);
    for (std::size_t i = 0; i < owners.size(); ++i) {
        if (owners[i] == who) return static_cast<std::uint16_t>(i + 1);
        if (!owners[i]) {
            if (!add) return 0;
            owners[i] = who;
            return static_cast<std::uint16_t>(i + 1);
        }
    }
    return 0;
}

std::error_code mirror::range_fault(Runtime& rt, Range& range) {
    auto& impl = *rt.impl_;
    if (impl.forked_child.load(std::memory_order_acquire)) return errno_code(ECHILD);
    detail::PageSource src;
    src.space = &impl.space;
    src.pagemap_fd = impl.pagemap.get();
    src.owner = impl.owner_id(range.dev_private_owner, false);
    src.view = &impl.view;
    src.protection_reported = impl.protection_reported.load(std::memory_order_acquire);
    // A device asking (advice): read-mostly pages get replicas for it,
    // and what it was advised accessed_by it sees where it is.
    src.device_reader = range.dev_private_owner != nullptr;
    const auto in_place = impl.in_place_for(range.notifier, range.start, range.end);
    src.in_place = &in_place;
    src.replicate = [&impl](std::uintptr_t a, std::uintptr_t b) {
        MigrateResult ignored;   // a replica that could not be made leaves the host page to read
        impl.replicate(a, b, ignored);
    };
    return detail::range_fault(src, range);
}

// ---- queries ----------------------------------------------------------------------------------

std::error_code Runtime::residency(const void* addr, std::size_t len, std::span<PageState> out) const {
    const auto start = reinterpret_cast<std::uintptr_t>(addr) & ~(std::uintptr_t{kPage} - 1);
    const auto end = reinterpret_cast<std::uintptr_t>(addr) + len;
    const std::size_t pages = (end - start + kPage - 1) / kPage;
    if (out.size() < pages) return errno_code(EINVAL);
    space::RangeRef r;
    for (std::size_t i = 0; i < pages; ++i) {
        const std::uintptr_t a = start + i * kPage;
        if (!r || !r->contains(a)) r = impl_->space.find(a);
        if (!r) return errno_code(EFAULT);
        const std::size_t p = r->index_of(a);
        std::lock_guard lock(r->lock_for(p));
        out[i] = r->entry(p).state;
    }
    return {};
}

Result<PageState> Runtime::state(const void* addr) const {
    PageState s{};
    if (auto ec = residency(addr, 1, {&s, 1})) return ec;
    return s;
}

bool Runtime::manages(const void* addr, std::size_t len) const {
    const auto start = reinterpret_cast<std::uintptr_t>(addr);
    if (len == 0 || start + len < start) return false;
    return impl_->space.overlaps(start, start + len);
}

std::size_t Runtime::policy_round() {
    const auto p = impl_->current_policy();
    return p ? p->round() : 0;
}

std::error_code Runtime::set_policy(const PolicyConfig& config) {
    if (impl_->forked_child.load(std::memory_order_acquire)) return child_refusal();
    std::shared_ptr<policy::Policy> next;
    if (config.kind == PolicyKind::chaos) next = std::make_shared<policy::ChaosPolicy>(*this, config);
    else if (config.kind == PolicyKind::tier) next = std::make_shared<policy::TierPolicy>(*this, config);
    std::shared_ptr<policy::Policy> old;
    {
        std::lock_guard lock(impl_->policy_lock);
        old = std::move(impl_->policy);
        impl_->policy = std::move(next);
        impl_->policy_config = config;
    }
    if (old) {
        // Its thread finishes its round and stops; then what it did is kept.
        old->stop();
        std::lock_guard lock(impl_->policy_lock);
        impl_->retired_rounds += old->rounds();
        impl_->retired_migrations += old->migrations();
    }
    return {};
}

PolicyConfig Runtime::policy() const {
    std::lock_guard lock(impl_->policy_lock);
    return impl_->policy_config;
}

std::vector<RangeInfo> Runtime::ranges() const {
    std::vector<space::RangeRef> refs;
    impl_->space.snapshot(refs);
    std::vector<RangeInfo> out;
    out.reserve(refs.size());
    for (auto& r : refs) {
        RangeInfo info{r->start(), r->bytes(), r->owned(), {}};
        for (std::size_t p = 0; p < r->pages();) {
            const std::size_t end = r->block_end(p);
            std::lock_guard lock(r->lock_for(p));
            for (; p < end; ++p) ++info.pages[static_cast<int>(r->entry(p).state)];
        }
        out.push_back(info);
    }
    return out;
}

RuntimeStats Runtime::stats() const {
    RuntimeStats s;
    constexpr auto r = std::memory_order_relaxed;
    impl_->space.for_each([&](space::ManagedRange& range) {
        ++s.ranges;
        s.managed_bytes += range.bytes();
        s.metadata_bytes += range.metadata_bytes();
    });
    const auto& f = impl_->fault_counters;
    s.faults = f.faults.load(r);
    s.first_touch_faults = f.first_touch_faults.load(r);
    s.device_faults = f.device_faults.load(r);
    s.write_waits = f.write_waits.load(r);
    s.faults_missing = f.faults_missing.load(r);
    s.faults_wp = f.faults_wp.load(r);
    s.fault_p50_ns = f.service_ns.percentile(0.5);
    s.fault_p99_ns = f.service_ns.percentile(0.99);
    s.watched_writes = f.watched_writes.load(r);
    s.pages_zero_filled = f.pages_zero_filled.load(r);
    s.pages_to_host_on_fault = f.pages_to_host_on_fault.load(r);
    const auto& m = impl_->migration_counters;
    s.pages_to_device = m.pages_to_device.load(r);
    s.copy_batches = m.copy_batches.load(r);
    s.replicas_made = m.replicas_made.load(r);
    s.replicas = s.replicas_made - std::min(s.replicas_made, m.replicas_dropped.load(r));
    s.replica_invalidations = f.replica_invalidations.load(r);
    s.prefetches = impl_->prefetches.load(r);
    s.pages_to_host = m.pages_to_host.load(r);
    s.pages_discarded = m.pages_discarded.load(r);
    s.migrate_failed_pages = m.failed_pages.load(r);
    s.bytes_to_device = m.bytes_to_device.load(r);
    s.bytes_to_host = m.bytes_to_host.load(r);
    s.arena = impl_->arena->stats();
    s.device_pages = s.arena.used_pages;
    s.migrations_would_block = impl_->nonblocking_refusals.load(r);
    s.ranges_managed = impl_->ranges_managed.load(r);
    {
        std::lock_guard lock(impl_->policy_lock);
        s.policy_rounds = impl_->retired_rounds;
        s.policy_migrations = impl_->retired_migrations;
        if (impl_->policy) {
            s.policy_rounds += impl_->policy->rounds();
            s.policy_migrations += impl_->policy->migrations();
        }
    }
    const auto v = impl_->view.counters();
    s.view_lookups = v.lookups;
    s.view_cache_hits = v.cache_hits;
    s.view_kernel_queries = v.kernel_queries;
    return s;
}

const RuntimeConfig& Runtime::config() const noexcept { return impl_->config; }

std::string Runtime::describe() const {
    return "arena: " + impl_->arena->describe() + "; engine: " + std::string(impl_->engine->name()) +
           "; fault_threads=" + std::to_string(impl_->monitor->threads()) +
           (impl_->monitor->pinned() ? " (one on each CPU)" : "") +
           "; fault_around=" + devmem::format_size(impl_->config.fault_around) +
           "; userfaultfd features: " + uffd::feature_names(impl_->uffd->features());
}

}  // namespace uhmm
