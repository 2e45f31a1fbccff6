// The owner table (see owners.hpp).
#include "devmem/owners.hpp"

namespace uhmm::devmem {

Result<OwnerId> OwnerTable::add(const void* token, PageFreeFn page_free) {
    if (!token) return make_error_code(Errc::bad_owner);
    std::lock_guard guard(add_lock_);
    const std::size_t n = count_.load(std::memory_order_relaxed);
    for (std::size_t i = 1; i < n; ++i) {
        if (entries_[i].token == token) return make_error_code(Errc::bad_owner);
    }
    if (n == kMaxOwners) return make_error_code(Errc::owner_table_full);
    entries_[n].token = token;
    entries_[n].page_free = std::move(page_free);
    count_.store(n + 1, std::memory_order_release);
    return OwnerId{static_cast<std::uint16_t>(n)};
}

bool OwnerTable::valid(OwnerId id) const noexcept {
    return id.value != 0 && id.value < count_.load(std::memory_order_acquire);
}

const void* OwnerTable::token(std::uint16_t id) const noexcept {
    return valid(OwnerId{id}) ? entries_[id].token : nullptr;
}

void OwnerTable::page_freed(PageIndex page, std::uint16_t id) const {
    if (!valid(OwnerId{id})) return;
    const Entry& e = entries_[id];
    if (e.page_free) e.page_free(page, e.token);
}

}  // namespace uhmm::devmem
