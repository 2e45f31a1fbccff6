// The tree of managed ranges (see the header).
#include "space/address_space.hpp"

#include <vector>

namespace uhmm::space {

AddressSpace::~AddressSpace() {
    std::unique_lock lock(lock_);
    tree_.clear_and_dispose([](ManagedRange* r) {
        r->mark_dead();
        r->put();
    });
}

ManagedRange* AddressSpace::containing_locked(std::uintptr_t addr) const noexcept {
    // The last range starting at or before addr.
    auto it = tree_.upper_bound(addr);
    if (it == tree_.begin()) return nullptr;
    --it;
    auto& r = const_cast<ManagedRange&>(*it);
    return r.contains(addr) ? &r : nullptr;
}

RangeRef AddressSpace::find(std::uintptr_t addr) const noexcept {
    std::shared_lock lock(lock_);
    return RangeRef(containing_locked(addr));
}

RangeRef AddressSpace::first_ending_after(std::uintptr_t addr) const noexcept {
    std::shared_lock lock(lock_);
    if (auto* r = containing_locked(addr)) return RangeRef(r);
    auto it = tree_.upper_bound(addr);
    return it == tree_.end() ? RangeRef() : RangeRef(const_cast<ManagedRange*>(&*it));
}

bool AddressSpace::overlaps(std::uintptr_t start, std::uintptr_t end) const noexcept {
    std::shared_lock lock(lock_);
    if (containing_locked(start)) return true;
    auto it = tree_.upper_bound(start);
    return it != tree_.end() && it->start() < end;
}

bool AddressSpace::insert(ManagedRange* range) noexcept {
    std::unique_lock lock(lock_);
    if (containing_locked(range->start())) return false;
    auto next = tree_.upper_bound(range->start());
    if (next != tree_.end() && next->start() < range->end()) return false;
    tree_.insert_unique(*range);
    return true;
}

bool AddressSpace::remove(ManagedRange* range) noexcept {
    {
        std::unique_lock lock(lock_);
        auto it = tree_.find(range->start());
        if (it == tree_.end() || &*it != range) return false;
        tree_.erase(it);
        range->mark_dead();
    }
    range->put();
    return true;
}

void AddressSpace::replace(ManagedRange* old, std::initializer_list<ManagedRange*> pieces) noexcept {
    {
        std::unique_lock lock(lock_);
        tree_.erase(tree_.iterator_to(*old));
        old->mark_dead();
        for (auto* p : pieces)
            if (p) tree_.insert_unique(*p);
    }
    old->put();
}

void AddressSpace::for_each(const std::function<void(ManagedRange&)>& fn) const {
    std::shared_lock lock(lock_);
    for (auto& r : tree_) fn(const_cast<ManagedRange&>(r));
}

}  // namespace uhmm::space
