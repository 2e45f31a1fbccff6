// OwnerTable: the arena's small table of owners (dev_private_owner tokens).
//
// A page stores a 16-bit index instead of the owner's pointer and callback,
// which keeps PageMeta at 16 bytes. Entries are only ever added, each written
// whole before the count that makes it visible is published (release), so
// readers (every put that frees a page) never lock.
#pragma once

#include <array>
#include <atomic>
#include <mutex>

#include <uhmm/devmem.hpp>

namespace uhmm::devmem {

class OwnerTable {
public:
    Result<OwnerId> add(const void* token, PageFreeFn page_free);
    bool valid(OwnerId id) const noexcept;
    const void* token(std::uint16_t id) const noexcept;     // nullptr for 0 or unknown
    // Run the owner's page_free for `page` (nothing when it has none).
    void page_freed(PageIndex page, std::uint16_t id) const;

private:
    struct Entry {
        const void* token = nullptr;
        PageFreeFn page_free;
    };
    std::array<Entry, kMaxOwners> entries_{};              // [0] is "no owner"
    std::atomic<std::size_t> count_{1};
    std::mutex add_lock_;
};

}  // namespace uhmm::devmem
