// The uhmm.devmem error category.
//
// Allocator outcomes get their own codes so that a log line says "arena full"
// rather than a bare ENOMEM, yet each compares equal to the std::errc a caller
// would test for (ec == std::errc::not_enough_memory still works).
#include <uhmm/devmem.hpp>

namespace uhmm::devmem {

namespace {

class Category final : public std::error_category {
public:
    const char* name() const noexcept override { return "uhmm.devmem"; }

    std::string message(int code) const override {
        switch (static_cast<Errc>(code)) {
        case Errc::arena_full: return "device-memory arena is full (arena_size reached)";
        case Errc::page_not_allocated: return "device page is not allocated";
        case Errc::bad_page: return "device page index beyond the arena";
        case Errc::bad_owner: return "unknown, null or duplicate owner token";
        case Errc::owner_table_full: return "too many owners registered on the arena";
        case Errc::refcount_overflow: return "device page refcount would overflow";
        case Errc::pool_empty:
            return "device-memory arena cannot grow: no free 2 MiB huge page in the kernel's pool (vm.nr_hugepages)";
        }
        return "unknown devmem error";
    }

    std::error_condition default_error_condition(int code) const noexcept override {
        switch (static_cast<Errc>(code)) {
        case Errc::arena_full:
        case Errc::pool_empty: return std::errc::not_enough_memory;
        case Errc::page_not_allocated:
        case Errc::bad_page:
        case Errc::bad_owner: return std::errc::invalid_argument;
        case Errc::owner_table_full: return std::errc::no_space_on_device;
        case Errc::refcount_overflow: return std::errc::value_too_large;
        }
        return {code, *this};
    }
};

}  // namespace

const std::error_category& devmem_category() noexcept {
    static const Category category;
    return category;
}

std::error_code make_error_code(Errc e) noexcept { return {static_cast<int>(e), devmem_category()}; }

}  // namespace uhmm::devmem
