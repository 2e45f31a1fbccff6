// /proc/self/smaps and /proc/self/pagemap readers (see the header).
#include "space/proc_maps.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <sstream>
#include <vector>

#include <uhmm/result.hpp>

#include "space/kernel_abi.hpp"

namespace uhmm::space {

namespace {

struct Vma {
    std::uintptr_t start = 0, end = 0;
    std::string perms, path;
    std::string flags;   // VmFlags, space separated
};

std::string hex(std::uintptr_t v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "0x%" PRIxPTR, v);
    return buf;
}

bool has_flag(const std::string& flags, const char* flag) {
    std::istringstream in(flags);
    std::string f;
    while (in >> f)
        if (f == flag) return true;
    return false;
}

std::error_code refuse(int err, std::string* why, const std::string& text) {
    if (why) *why = text;
    return errno_code(err);
}

}  // namespace

std::error_code check_manageable(std::uintptr_t start, std::uintptr_t end, std::string* why) {
    std::ifstream in("/proc/self/smaps");
    if (!in) return refuse(errno ? errno : EIO, why, "cannot read /proc/self/smaps");
    std::vector<Vma> vmas;
    std::string line;
    while (std::getline(in, line)) {
        unsigned long long s = 0, e = 0;
        char perms[8] = {};
        int consumed = 0;
        if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %*s%n", &s, &e, perms, &consumed) >= 3 &&
            line.find('-') < line.find(' ')) {
            Vma v;
            v.start = s;
            v.end = e;
            v.perms = perms;
            if (consumed > 0 && static_cast<std::size_t>(consumed) < line.size()) {
                const auto p = line.find_first_not_of(' ', static_cast<std::size_t>(consumed));
                if (p != std::string::npos) v.path = line.substr(p);
            }
            vmas.push_back(std::move(v));
        } else if (line.rfind("VmFlags:", 0) == 0 && !vmas.empty()) {
            vmas.back().flags = line.substr(8);
        }
    }
    const std::string what = "[" + hex(start) + ", " + hex(end) + ")";
    std::uintptr_t covered = start;
    for (const auto& v : vmas) {
        if (v.end <= start || v.start >= end) continue;
        if (v.start > covered)
            return refuse(EFAULT, why, what + " is not wholly mapped: nothing at " + hex(covered));
        const std::string where = " (mapping " + hex(v.start) + "-" + hex(v.end) +
                                  (v.path.empty() ? "" : " " + v.path) + ")";
        if (v.perms.size() >= 4 && v.perms[3] == 's')
            return refuse(ENOENT, why, what + " is a shared mapping" + where +
                                           ": only private anonymous memory can be managed");
        if (has_flag(v.flags, "ht"))
            return refuse(EINVAL, why, what + " is hugetlb memory" + where +
                                           ": only 4 KiB private anonymous memory can be managed");
        const bool anonymous = v.path.empty() || v.path == "[heap]" || v.path == "[stack]" ||
                               v.path.rfind("[anon:", 0) == 0;
        if (!anonymous)
            return refuse(EINVAL, why, what + " is file-backed or special" + where +
                                           ": only private anonymous memory can be managed");
        if (has_flag(v.flags, "um") || has_flag(v.flags, "uw"))
            return refuse(EBUSY, why, what + " is already registered with a userfaultfd" + where);
        covered = v.end;
        if (covered >= end) return {};
    }
    return refuse(EFAULT, why, what + " is not wholly mapped: nothing at " + hex(covered));
}

std::error_code read_pagemap(int pagemap_fd, std::uintptr_t addr, std::size_t pages, std::uint64_t* out) noexcept {
    auto* dst = reinterpret_cast<char*>(out);
    std::size_t want = pages * sizeof(std::uint64_t), done = 0;
    const off_t offset = static_cast<off_t>(addr / 4096 * sizeof(std::uint64_t));
    while (done < want) {
        const ssize_t n = ::pread(pagemap_fd, dst + done, want - done, offset + static_cast<off_t>(done));
        if (n < 0) {
            if (errno == EINTR) continue;
            return last_errno();
        }
        if (n == 0) return errno_code(EIO);
        done += static_cast<std::size_t>(n);
    }
    return {};
}

std::error_code read_huge_runs(int pagemap_fd, std::uintptr_t start, std::uintptr_t end, std::vector<PageRun>& out) {
    kernel::page_region regions[64];
    for (std::uintptr_t at = start; at < end;) {
        kernel::pm_scan_arg arg{};
        arg.size = sizeof arg;
        arg.start = at;
        arg.end = end;
        arg.vec = reinterpret_cast<std::uintptr_t>(regions);
        arg.vec_len = std::size(regions);
        arg.category_mask = kernel::kPageIsHuge;
        arg.return_mask = kernel::kPageIsHuge;
        const int n = ::ioctl(pagemap_fd, kernel::kPagemapScan, &arg);
        if (n < 0) {
            if (errno == EINTR) continue;
            return last_errno();
        }
        for (int i = 0; i < n; ++i) out.push_back({regions[i].start, regions[i].end});
        // walk_end < end: the vector filled up; go on from there.
        if (arg.walk_end <= at) break;
        at = arg.walk_end;
    }
    return {};
}

}  // namespace uhmm::space
