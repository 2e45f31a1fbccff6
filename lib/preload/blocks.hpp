// The heap blocks the preload library handed out as managed ranges: start
// address → mapped length. free(), realloc() and malloc_usable_size() look
// a pointer up here; every block starts on a page, so a pointer that does
// not cannot be one of them and never takes the lock.
//
// Nodes come from slabs mapped with the raw mmap, never from malloc (the
// table serves malloc). A Boost.Intrusive AVL set keeps them by address.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

#include <boost/intrusive/avl_set.hpp>

namespace uhmm::preload {

class Blocks {
public:
    Blocks() = default;
    Blocks(const Blocks&) = delete;
    Blocks& operator=(const Blocks&) = delete;

    // false: no memory for a node (the caller gives the block up).
    bool insert(void* start, std::size_t len) noexcept;
    // The block's mapped length, if `p` starts one.
    std::optional<std::size_t> find(const void* p) const noexcept;
    // Take it out; its length, if it was there.
    std::optional<std::size_t> erase(const void* p) noexcept;

    static bool may_hold(const void* p) noexcept { return (reinterpret_cast<std::uintptr_t>(p) & 4095) == 0; }

    // fork(): held across it, so the child never inherits a locked table.
    void lock() noexcept { mutex_.lock(); }
    void unlock() noexcept { mutex_.unlock(); }

private:
    struct Node : boost::intrusive::avl_set_base_hook<> {
        std::uintptr_t start = 0;
        std::size_t len = 0;
        Node* next_free = nullptr;
        friend bool operator<(const Node& a, const Node& b) noexcept { return a.start < b.start; }
    };
    struct Key {
        bool operator()(const Node& n, std::uintptr_t a) const noexcept { return n.start < a; }
        bool operator()(std::uintptr_t a, const Node& n) const noexcept { return a < n.start; }
    };
    Node* take_node() noexcept;   // under mutex_

    mutable std::mutex mutex_;
    boost::intrusive::avl_set<Node> set_;
    Node* free_ = nullptr;
};

}  // namespace uhmm::preload
