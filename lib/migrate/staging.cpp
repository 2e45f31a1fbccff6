// StagingPool and StagingBuffer: slots of a runtime-owned region, handed out
// and returned under one mutex (acquire/release happen once per migration
// chunk, never per page, so the lock is cold).
#include "migrate/staging.hpp"

#include <sys/mman.h>

#include <utility>

namespace uhmm::migrate {

StagingBuffer::StagingBuffer(detail::StagingPool* pool, std::uint32_t slot, std::span<std::byte> bytes) noexcept
    : pool_(pool), slot_(slot), bytes_(bytes) {}

StagingBuffer::StagingBuffer(StagingBuffer&& o) noexcept
    : pool_(std::exchange(o.pool_, nullptr)), slot_(o.slot_), bytes_(std::exchange(o.bytes_, {})) {}

StagingBuffer& StagingBuffer::operator=(StagingBuffer&& o) noexcept {
    if (this != &o) {
        release();
        pool_ = std::exchange(o.pool_, nullptr);
        slot_ = o.slot_;
        bytes_ = std::exchange(o.bytes_, {});
    }
    return *this;
}

StagingBuffer::~StagingBuffer() { release(); }

void StagingBuffer::release() noexcept {
    if (pool_) std::exchange(pool_, nullptr)->release(slot_);
    bytes_ = {};
}

namespace detail {

void StagingPool::reset(std::span<std::byte> region, std::size_t slot_bytes, std::size_t slots) {
    std::lock_guard lk(mu_);
    region_ = region;
    slot_bytes_ = slot_bytes;
    slots_ = slots;
    free_.clear();
    // Hand out low slots first (a stack: the last pushed is taken first).
    for (std::size_t i = slots; i-- > 0;) free_.push_back(static_cast<std::uint32_t>(i));
}

Result<StagingBuffer> StagingPool::acquire() {
    std::lock_guard lk(mu_);
    if (slots_ == 0) return std::errc::no_space_on_device;
    if (free_.empty()) return std::errc::resource_unavailable_try_again;
    const auto slot = free_.back();
    free_.pop_back();
    return StagingBuffer(this, slot, region_.subspan(slot * slot_bytes_, slot_bytes_));
}

void StagingPool::release(std::uint32_t slot) noexcept {
    std::lock_guard lk(mu_);
    free_.push_back(slot);
}

std::optional<std::uint32_t> StagingPool::slot_of(const void* p, std::size_t len) const noexcept {
    if (slots_ == 0) return std::nullopt;
    const auto* b = static_cast<const std::byte*>(p);
    if (b < region_.data() || b + len > region_.data() + region_.size()) return std::nullopt;
    const auto off = static_cast<std::size_t>(b - region_.data());
    const auto slot = off / slot_bytes_;
    if ((off + len - 1) / slot_bytes_ != slot) return std::nullopt;   // straddles two slots
    return static_cast<std::uint32_t>(slot);
}

std::size_t StagingPool::in_use() const {
    std::lock_guard lk(mu_);
    return slots_ - free_.size();
}

Result<AnonRegion> AnonRegion::create(std::size_t bytes) {
    AnonRegion r;
    if (bytes == 0) return r;
    // Populated up front: a first touch costs ~10 µs a page here (PLATFORM.md).
    void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (p == MAP_FAILED) return last_errno();
    r.p_ = static_cast<std::byte*>(p);
    r.n_ = bytes;
    return r;
}

AnonRegion::AnonRegion(AnonRegion&& o) noexcept
    : p_(std::exchange(o.p_, nullptr)), n_(std::exchange(o.n_, 0)) {}

AnonRegion& AnonRegion::operator=(AnonRegion&& o) noexcept {
    if (this != &o) {
        if (p_) ::munmap(p_, n_);
        p_ = std::exchange(o.p_, nullptr);
        n_ = std::exchange(o.n_, 0);
    }
    return *this;
}

AnonRegion::~AnonRegion() {
    if (p_) ::munmap(p_, n_);
}

}  // namespace detail
}  // namespace uhmm::migrate
