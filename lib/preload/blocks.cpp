// Blocks (see blocks.hpp).
#include "preload/blocks.hpp"

#include <sys/mman.h>

#include <new>

#include "preload/real.hpp"

namespace uhmm::preload {

namespace {
constexpr std::size_t kSlab = 64 * 1024;
}  // namespace

Blocks::Node* Blocks::take_node() noexcept {
    if (!free_) {
        void* slab = real::mmap(nullptr, kSlab, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (slab == MAP_FAILED) return nullptr;
        auto* nodes = static_cast<Node*>(slab);
        for (std::size_t i = 0; i < kSlab / sizeof(Node); ++i) {
            Node* n = new (&nodes[i]) Node;
            n->next_free = free_;
            free_ = n;
        }
    }
    Node* n = free_;
    free_ = n->next_free;
    return n;
}

bool Blocks::insert(void* start, std::size_t len) noexcept {
    std::lock_guard lock(mutex_);
    Node* n = take_node();
    if (!n) return false;
    n->start = reinterpret_cast<std::uintptr_t>(start);
    n->len = len;
    set_.insert(*n);
    return true;
}

std::optional<std::size_t> Blocks::find(const void* p) const noexcept {
    if (!may_hold(p)) return std::nullopt;
    std::lock_guard lock(mutex_);
    auto it = set_.find(reinterpret_cast<std::uintptr_t>(p), Key{});
    if (it == set_.end()) return std::nullopt;
    return it->len;
}

std::optional<std::size_t> Blocks::erase(const void* p) noexcept {
    if (!may_hold(p)) return std::nullopt;
    std::lock_guard lock(mutex_);
    auto it = set_.find(reinterpret_cast<std::uintptr_t>(p), Key{});
    if (it == set_.end()) return std::nullopt;
    Node& n = *it;
    set_.erase(it);
    const std::size_t len = n.len;
    n.next_free = free_;
    free_ = &n;
    return len;
}

}  // namespace uhmm::preload
