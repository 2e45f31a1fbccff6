// uhmm::Result<T> — a value or a std::error_code, the library's return type.
//
// Inside the library errors are values (std::error_code with the generic
// category for errno), never exceptions: the fault-handling thread and the
// preload library's C ABI must not unwind. C++20 has no std::expected, so this
// is the smallest type that says "T, or why not".
#pragma once

#include <cerrno>
#include <system_error>
#include <utility>
#include <variant>

namespace uhmm {

inline std::error_code errno_code(int err) noexcept { return {err, std::generic_category()}; }
inline std::error_code last_errno() noexcept { return errno_code(errno); }

template <class T>
class [[nodiscard]] Result {
public:
    Result(T value) : v_(std::move(value)) {}                      // NOLINT: implicit by design
    Result(std::error_code ec) : v_(ec) {}                         // NOLINT
    Result(std::errc e) : v_(std::make_error_code(e)) {}           // NOLINT

    bool ok() const noexcept { return std::holds_alternative<T>(v_); }
    explicit operator bool() const noexcept { return ok(); }

    T& value() & { return std::get<T>(v_); }
    const T& value() const& { return std::get<T>(v_); }
    T&& value() && { return std::get<T>(std::move(v_)); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }
    T& operator*() & { return value(); }
    const T& operator*() const& { return value(); }

    // The error; an empty error_code when the result holds a value.
    std::error_code error() const noexcept {
        return ok() ? std::error_code{} : std::get<std::error_code>(v_);
    }

private:
    std::variant<T, std::error_code> v_;
};

}  // namespace uhmm
