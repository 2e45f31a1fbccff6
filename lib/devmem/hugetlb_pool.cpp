// The 2 MiB huge page pool through sysfs (see hugetlb_pool.hpp).
#include "devmem/hugetlb_pool.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <charconv>
#include <mutex>

#include <uhmm/fd.hpp>

#include "devmem/backend.hpp"

namespace uhmm::devmem {

namespace {

std::mutex& pool_lock() {
    static std::mutex lock;
    return lock;
}

Result<long> read_long(const std::string& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return last_errno();
    char buf[32];
    const ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) return last_errno();
    long value = 0;
    const auto [ptr, ec] = std::from_chars(buf, buf + n, value);
    if (ec != std::errc{} || ptr == buf) return errno_code(EINVAL);
    return value;
}

std::error_code write_long(const std::string& path, long value) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return last_errno();
    const std::string text = std::to_string(value) + "\n";
    if (::write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size())) return last_errno();
    return {};
}

}  // namespace

Result<PoolCounts> HugetlbPool::read() const {
    PoolCounts c;
    for (auto [name, field] : {std::pair{"/nr_hugepages", &c.total}, std::pair{"/free_hugepages", &c.free},
                               std::pair{"/resv_hugepages", &c.reserved}}) {
        auto v = read_long(dir_ + name);
        if (!v) return v.error();
        *field = *v;
    }
    return c;
}

Result<long> HugetlbPool::add(long n, std::string* why) const {
    std::lock_guard guard(pool_lock());
    const std::string path = dir_ + "/nr_hugepages";
    auto before = read_long(path);
    if (!before) {
        if (why) *why = describe_error("reading " + path, before.error());
        return before.error();
    }
    if (auto ec = write_long(path, *before + n)) {
        if (why) *why = describe_error("writing " + path, ec);
        return ec;
    }
    auto after = read_long(path);
    if (!after) {
        if (why) *why = describe_error("reading " + path, after.error());
        return after.error();
    }
    return std::max(0L, *after - *before);
}

std::error_code HugetlbPool::remove(long n) const {
    if (n <= 0) return {};
    std::lock_guard guard(pool_lock());
    const std::string path = dir_ + "/nr_hugepages";
    auto now = read_long(path);
    if (!now) return now.error();
    // The kernel keeps pages in use (as surplus) if asked to go below them.
    return write_long(path, std::max(0L, *now - n));
}

}  // namespace uhmm::devmem
