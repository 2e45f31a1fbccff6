// Arena: a backend (where memory comes from) + a page allocator (how it is
// handed out) + an owner table (who holds each page and hears of its free).
//
// The glue is thin on purpose: the allocator never knows which backend it
// carves, and backends never see pages. The arena validates the spec, wires
// growth (allocator → backend.map_chunk) and page_free (allocator → owner's
// callback), and says what it really built.
#include <uhmm/devmem.hpp>

#include "base/log.hpp"
#include "devmem/backend.hpp"
#include "devmem/owners.hpp"
#include "devmem/page_allocator.hpp"

namespace uhmm::devmem {

struct Arena::Impl {
    ArenaSpec spec;
    OwnerTable owners;                          // outlives the allocator (page_free)
    std::unique_ptr<ArenaBackend> backend;           // outlives the allocator (growth)
    std::unique_ptr<PageAllocator> pages;
    std::byte* base = nullptr;                  // backend->view().base, fixed for life
    std::atomic<bool> growth_warned{false};
};

namespace {

std::error_code bad_spec(std::string* why, std::string text) {
    if (why) *why = std::move(text);
    return errno_code(EINVAL);
}

std::string mib(std::size_t bytes) { return std::to_string(bytes >> 20) + " MiB"; }

}  // namespace

Result<std::unique_ptr<Arena>> Arena::create(const ArenaSpec& spec_in, std::string* why) {
    ArenaSpec spec = spec_in;
    if (spec.size < kChunkSize || spec.size % kChunkSize != 0 || spec.size > (std::size_t{1} << 44)) {
        return bad_spec(why, "arena_size=" + std::to_string(spec.size) +
                                 ": must be a multiple of 2 MiB, from 2M to 16T (parse_arena_spec rounds it)");
    }
    spec.initial = std::max(kChunkSize, (spec.initial + kChunkSize - 1) / kChunkSize * kChunkSize);
    if (spec.initial > spec.size) {
        return bad_spec(why, "arena initial size " + mib(spec.initial) + " exceeds arena_size=" + mib(spec.size));
    }

    auto impl = std::make_unique<Impl>();
    impl->spec = spec;
    auto backend = make_backend(spec, why);
    if (!backend) return backend.error();
    impl->backend = std::move(*backend);
    impl->base = impl->backend->view().base;

    Impl* raw = impl.get();
    auto pages = PageAllocator::create(
        spec.size / kChunkSize, spec.initial / kChunkSize,
        [raw](std::size_t index) { return raw->backend->map_chunk(index); },
        [raw](PageIndex page, std::uint16_t owner) { raw->owners.page_freed(page, owner); });
    if (!pages) {
        if (why) *why = describe_error("arena: page metadata for " + mib(spec.size), pages.error());
        return pages.error();
    }
    impl->pages = std::move(*pages);

    std::unique_ptr<Arena> arena(new Arena(std::move(impl)));
    log::get().info("arena: {}", arena->describe());
    return arena;
}

Arena::Arena(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Arena::~Arena() {
    const auto used = impl_->pages->counters().used_pages;
    if (used > 0) {
        log::get().warn("arena destroyed with {} device pages still allocated; their page_free callbacks "
                        "do not run", used);
    }
}

ArenaView Arena::view() const {
    ArenaView v = impl_->backend->view();
    v.size = impl_->pages->capacity_pages() * kPageSize;
    return v;
}

const ArenaSpec& Arena::spec() const noexcept { return impl_->spec; }

std::string Arena::describe() const {
    const auto c = impl_->pages->counters();
    return impl_->backend->describe() + "; " + std::to_string(c.chunks) + " of " +
           std::to_string(impl_->spec.size / kChunkSize) + " chunks mapped (" + to_string(impl_->spec) + ")";
}

ArenaStats Arena::stats() const {
    const auto c = impl_->pages->counters();
    ArenaStats s;
    s.limit_pages = impl_->spec.size / kPageSize;
    s.capacity_pages = c.capacity_pages;
    s.used_pages = c.used_pages;
    s.high_water_pages = c.high_water_pages;
    s.alloc_failures = c.alloc_failures;
    s.chunks = c.chunks;
    s.runs_contiguous = c.runs_contiguous;
    s.runs_scattered = c.runs_scattered;
    return s;
}

std::byte* Arena::address(PageIndex page) const noexcept {
    if (!impl_->base || page >= impl_->pages->capacity_pages()) return nullptr;
    return impl_->base + ArenaView::offset_of(page);
}

std::error_code Arena::grow(std::size_t bytes) {
    if (bytes > impl_->spec.size) return Errc::arena_full;
    return impl_->pages->grow_to((bytes + kChunkSize - 1) / kChunkSize);
}

Result<OwnerId> Arena::add_owner(const void* token, PageFreeFn page_free) {
    return impl_->owners.add(token, std::move(page_free));
}

const void* Arena::owner_token(OwnerId id) const noexcept { return impl_->owners.token(id.value); }

namespace {

// Growth that fails below the limit (the host is out of memory, the huge page
// pool is empty) is worth one line in the log; a full arena is the caller's.
template <class T>
Result<T> note_growth_failure(Result<T> r, std::atomic<bool>& warned, const std::string& what) {
    if (!r && r.error() != Errc::arena_full && !warned.exchange(true)) {
        log::get().warn("arena: growing {} failed: {}", what, r.error().message());
    }
    return r;
}

}  // namespace

Result<PageIndex> Arena::alloc(OwnerId owner) {
    if (!impl_->owners.valid(owner)) return make_error_code(Errc::bad_owner);
    return note_growth_failure(impl_->pages->alloc(owner.value), impl_->growth_warned,
                               to_string(impl_->spec.backend));
}

Result<std::size_t> Arena::alloc_run(std::size_t n, OwnerId owner, std::span<PageIndex> out) {
    if (!impl_->owners.valid(owner)) return make_error_code(Errc::bad_owner);
    if (out.size() < n) return errno_code(EINVAL);
    return note_growth_failure(impl_->pages->alloc_run(n, owner.value, out), impl_->growth_warned,
                               to_string(impl_->spec.backend));
}

std::error_code Arena::get(PageIndex page) noexcept { return impl_->pages->get(page); }
std::error_code Arena::put(PageIndex page) noexcept { return impl_->pages->put(page); }
std::uint32_t Arena::refcount(PageIndex page) const noexcept { return impl_->pages->refcount(page); }
const void* Arena::owner(PageIndex page) const noexcept { return impl_->owners.token(impl_->pages->owner(page)); }
OwnerId Arena::owner_id(PageIndex page) const noexcept { return OwnerId{impl_->pages->owner(page)}; }

}  // namespace uhmm::devmem
