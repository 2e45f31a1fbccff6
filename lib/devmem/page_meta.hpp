// PageMeta: what the allocator keeps per 4 KiB device page — 16 bytes.
//
// The kernel's struct page for a ZONE_DEVICE page carries a refcount, the
// pgmap (and through it the owner and page_free), and list links. Here the
// same facts fit in 16 bytes, checked at compile time:
//   8  the free-list link (Boost.Intrusive slist hook), used only while free
//   4  the refcount (0 = free), atomic: get/put never take a lock
//   2  the owner, an index into the arena's small owner table
//   2  flags, touched only under the page's shard lock
// A singly linked list is enough because pages are only pushed and popped at
// the front; a fully free chunk drops its whole list at once (see
// page_allocator.cpp), so no page is ever unlinked from the middle.
#pragma once

#include <atomic>
#include <cstdint>

#include <boost/intrusive/slist.hpp>

namespace uhmm::devmem {

struct PageMeta {
    using Hook = boost::intrusive::slist_member_hook<
        boost::intrusive::link_mode<boost::intrusive::normal_link>>;

    static constexpr std::uint16_t kOnFreeList = 1u << 0;

    Hook hook;                                 // free-list link, under the shard lock
    std::atomic<std::uint32_t> refs{0};        // 0: free
    std::atomic<std::uint16_t> owner{0};       // OwnerId value; 0 while free
    std::uint16_t flags = 0;                   // kOnFreeList; under the shard lock
};

static_assert(sizeof(PageMeta) == 16, "device page metadata must stay at 16 bytes");
static_assert(std::atomic<std::uint32_t>::is_always_lock_free);
static_assert(std::atomic<std::uint16_t>::is_always_lock_free);

// The free pages of one chunk, LIFO (the most recently freed page is the
// warmest in the copy engine's caches).
using PageFreeList = boost::intrusive::slist<
    PageMeta,
    boost::intrusive::member_hook<PageMeta, PageMeta::Hook, &PageMeta::hook>,
    boost::intrusive::constant_time_size<false>,
    boost::intrusive::linear<true>>;

}  // namespace uhmm::devmem
