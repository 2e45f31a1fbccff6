// The managed ranges of the process: a Boost.Intrusive tree ordered by start,
// behind a reader-writer lock.
//
// Lookups take a reference on the range and drop the tree lock at once, so no
// one holds the tree lock while waiting for anything (a zap waits for the
// fault thread, which may need the tree). Nothing here allocates: the fault
// thread inserts and removes ranges when mremap/munmap move them.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <shared_mutex>
#include <utility>

#include <boost/intrusive/set.hpp>

#include "space/managed_range.hpp"

namespace uhmm::space {

// A counted reference to a range (empty when the lookup found none).
class RangeRef {
public:
    RangeRef() = default;
    explicit RangeRef(ManagedRange* r) noexcept : r_(r) { if (r_) r_->get(); }
    RangeRef(RangeRef&& o) noexcept : r_(std::exchange(o.r_, nullptr)) {}
    RangeRef& operator=(RangeRef&& o) noexcept { reset(); r_ = std::exchange(o.r_, nullptr); return *this; }
    RangeRef(const RangeRef& o) noexcept : RangeRef(o.r_) {}
    RangeRef& operator=(const RangeRef& o) noexcept { if (this != &o) { reset(); r_ = o.r_; if (r_) r_->get(); } return *this; }
    ~RangeRef() { reset(); }

    void reset() noexcept { if (r_) std::exchange(r_, nullptr)->put(); }
    ManagedRange* get() const noexcept { return r_; }
    ManagedRange* operator->() const noexcept { return r_; }
    ManagedRange& operator*() const noexcept { return *r_; }
    explicit operator bool() const noexcept { return r_ != nullptr; }

private:
    ManagedRange* r_ = nullptr;
};

class AddressSpace {
public:
    AddressSpace() = default;
    ~AddressSpace();   // drops the tree's references
    AddressSpace(const AddressSpace&) = delete;
    AddressSpace& operator=(const AddressSpace&) = delete;

    // The range containing addr.
    RangeRef find(std::uintptr_t addr) const noexcept;
    // The first range that ends after `addr` (the one containing it, or the next).
    RangeRef first_ending_after(std::uintptr_t addr) const noexcept;
    // Whether any range overlaps [start, end).
    bool overlaps(std::uintptr_t start, std::uintptr_t end) const noexcept;

    // Insert a range (the tree takes over its initial reference); false when
    // it overlaps one already there (the caller still owns it).
    bool insert(ManagedRange* range) noexcept;
    // Take a range out (marks it dead, drops the tree's reference); false when
    // it was not in the tree.
    bool remove(ManagedRange* range) noexcept;

    // Swap `old` for `pieces` (none, one or two ranges inside it) in one step,
    // so no lookup sees the addresses unmanaged in between.
    void replace(ManagedRange* old, std::initializer_list<ManagedRange*> pieces) noexcept;

    // Visit every range under the shared lock (fn must not wait for faults).
    void for_each(const std::function<void(ManagedRange&)>& fn) const;
    // Every range, referenced, in address order (for work that may block).
    template <class Out> void snapshot(Out& out) const {
        std::shared_lock lock(lock_);
        for (auto& r : tree_) out.emplace_back(const_cast<ManagedRange*>(&r));
    }

private:
    using Tree = boost::intrusive::set<ManagedRange, boost::intrusive::key_of_value<RangeStart>,
                                       boost::intrusive::constant_time_size<true>>;
    ManagedRange* containing_locked(std::uintptr_t addr) const noexcept;

    mutable std::shared_mutex lock_;
    Tree tree_;
};

}  // namespace uhmm::space
