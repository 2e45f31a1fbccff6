// hmmctl maps PID: any process's mappings (/proc/PID/maps), each with its
// resident, swapped and huge pages counted from /proc/PID/pagemap, and,
// when the process runs uhmm, its device pages from the runtime.
//
// Huge pages: a present page is part of a huge page (THP or hugetlb) when
// /proc/kpageflags says so for its frame; frame numbers are visible to
// CAP_SYS_ADMIN only, so without them the counts come from /proc/PID/smaps
// (AnonHugePages, Shared/Private_Hugetlb) instead. Mappings nobody may
// touch (---p) larger than 1 GiB, such as a sanitizer's shadow reservations,
// are not walked: their counts show as "-".
//
// Device pages of a managed range are counted in the mapping that holds the
// range's start (a range that mprotect split over several mappings is
// counted in its first).
//
// A kernel thread (kthreadd, pid 2 outside containers) has no address space:
// it is shown as such, with no mappings and exit status 0, since that is the
// true answer and not a failure.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cinttypes>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "client.hpp"
#include "commands.hpp"
#include "control/paths.hpp"
#include "errors.hpp"
#include "format.hpp"
#include "printable.hpp"

namespace hmmctl {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kUnwalkedNoAccess = std::uint64_t{1} << 30;
constexpr std::uint64_t kPresent = std::uint64_t{1} << 63, kSwapped = std::uint64_t{1} << 62;
constexpr std::uint64_t kPfnMask = (std::uint64_t{1} << 55) - 1;
constexpr std::uint64_t kKpfHuge = std::uint64_t{1} << 17, kKpfThp = std::uint64_t{1} << 22;
constexpr unsigned long kPfKthread = 0x00200000;   // PF_KTHREAD, include/linux/sched.h

struct Mapping {
    std::uint64_t start = 0, end = 0, offset = 0;
    std::string perms, path;
    bool walked = false;
    std::uint64_t resident = 0, swapped = 0, huge = 0, device = 0;
    bool huge_known = false;
};

[[noreturn]] void proc_failure(pid_t pid, const std::string& file, int err) {
    const std::string p = std::to_string(pid);
    if (err == ENOENT || err == ESRCH) fail("no process " + p);
    if (err == EACCES || err == EPERM)
        fail("permission denied: cannot read /proc/" + p + "/" + file + " (run as the process's user or root)");
    fail("/proc/" + p + "/" + file + ": " + std::strerror(err));
}

std::string read_proc(pid_t pid, const std::string& file) {
    const std::string path = "/proc/" + std::to_string(pid) + "/" + file;
    uhmm::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) proc_failure(pid, file, errno);
    std::string text;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) proc_failure(pid, file, errno);
        if (n == 0) return text;
        text.append(buf, static_cast<std::size_t>(n));
    }
}

// The name of `pid` when it is a kernel thread (PF_KTHREAD in the flags of
// /proc/PID/stat), nullopt when it is not. Its maps would read as empty and
// its pagemap would not open (ESRCH), which looks like "no process".
std::optional<std::string> kernel_thread_name(pid_t pid) {
    const std::string stat = read_proc(pid, "stat");
    // "PID (COMM) STATE PPID PGRP SESSION TTY TPGID FLAGS ...": COMM may hold
    // spaces and parentheses, so the fields are counted from the last ')'.
    const auto open = stat.find('('), close = stat.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) return std::nullopt;
    std::istringstream fields(stat.substr(close + 1));
    std::string state;
    long ppid = 0, pgrp = 0, session = 0, tty = 0, tpgid = 0;
    unsigned long flags = 0;
    if (!(fields >> state >> ppid >> pgrp >> session >> tty >> tpgid >> flags) || !(flags & kPfKthread))
        return std::nullopt;
    return stat.substr(open + 1, close - open - 1);
}

int kernel_thread(const Common& common, pid_t pid, const std::string& name) {
    if (common.json) {
        print_json({{"pid", pid},
                    {"uhmm", false},
                    {"kernel_thread", true},
                    {"mappings", nlohmann::json::array()},
                    {"resident_pages", 0},
                    {"swapped_pages", 0},
                    {"huge_pages", 0}});
    } else {
        std::printf("process %d (%s) is a kernel thread: it has no user mappings\n", pid, printable(name).c_str());
    }
    return exit_ok;
}

std::vector<Mapping> parse_maps(const std::string& text) {
    std::vector<Mapping> out;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        Mapping m;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " %7s %" SCNx64 " %*s %*u %n", &m.start, &m.end, perms,
                        &m.offset, &path_at) < 4)
            continue;
        m.perms = perms;
        if (path_at > 0) m.path = line.substr(static_cast<std::size_t>(path_at));
        out.push_back(std::move(m));
    }
    return out;
}

// Frames' flags from /proc/kpageflags, read in runs of consecutive frames.
class FrameFlags {
public:
    FrameFlags() : fd_(::open("/proc/kpageflags", O_RDONLY | O_CLOEXEC)) {}
    bool usable() const { return fd_.valid(); }
    // How many of `pfns` are part of a huge page.
    std::uint64_t huge_among(const std::vector<std::uint64_t>& pfns) {
        std::uint64_t huge = 0;
        for (std::size_t i = 0; i < pfns.size();) {
            std::size_t j = i + 1;
            while (j < pfns.size() && pfns[j] == pfns[j - 1] + 1 && j - i < 4096) ++j;
            flags_.resize(j - i);
            const auto bytes = static_cast<ssize_t>(flags_.size() * 8);
            if (::pread(fd_.get(), flags_.data(), static_cast<std::size_t>(bytes),
                        static_cast<off_t>(pfns[i] * 8)) == bytes)
                for (auto f : flags_) huge += (f & (kKpfHuge | kKpfThp)) ? 1 : 0;
            i = j;
        }
        return huge;
    }

private:
    uhmm::Fd fd_;
    std::vector<std::uint64_t> flags_;
};

// Resident, swapped and (with frame numbers) huge pages of each mapping.
// Returns whether every present page had a frame number.
bool walk_pagemap(pid_t pid, std::vector<Mapping>& maps) {
    const std::string path = "/proc/" + std::to_string(pid) + "/pagemap";
    uhmm::Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) proc_failure(pid, "pagemap", errno);
    FrameFlags frames;
    bool all_frames = frames.usable();
    std::vector<std::uint64_t> entries(65536), pfns;
    for (auto& m : maps) {
        if (m.perms.rfind("---", 0) == 0 && m.end - m.start > kUnwalkedNoAccess) continue;
        pfns.clear();
        for (std::uint64_t page = m.start / kPage; page < m.end / kPage;) {
            const std::uint64_t n = std::min<std::uint64_t>(entries.size(), m.end / kPage - page);
            const ssize_t got = ::pread(fd.get(), entries.data(), n * 8, static_cast<off_t>(page * 8));
            if (got < 0 && errno == EINTR) continue;
            if (got < 0) proc_failure(pid, "pagemap", errno);
            if (got == 0) break;   // the mapping went away meanwhile
            for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(got) / 8; ++i) {
                const auto e = entries[i];
                if (e & kPresent) {
                    ++m.resident;
                    if ((e & kPfnMask) != 0) pfns.push_back(e & kPfnMask);
                    else all_frames = false;
                } else if (e & kSwapped) {
                    ++m.swapped;
                }
            }
            page += static_cast<std::uint64_t>(got) / 8;
        }
        m.walked = true;
        if (frames.usable() && pfns.size() == m.resident) {
            m.huge = frames.huge_among(pfns);
            m.huge_known = true;
        }
    }
    return all_frames;
}

// Huge pages from /proc/PID/smaps, for the mappings kpageflags could not do.
void huge_from_smaps(pid_t pid, std::vector<Mapping>& maps) {
    std::map<std::uint64_t, Mapping*> by_start;
    for (auto& m : maps) by_start[m.start] = &m;
    std::istringstream in(read_proc(pid, "smaps"));
    std::string line;
    Mapping* current = nullptr;
    while (std::getline(in, line)) {
        std::uint64_t a = 0, b = 0, kb = 0;
        char key[64] = {};
        if (std::sscanf(line.c_str(), "%" SCNx64 "-%" SCNx64 " ", &a, &b) == 2) {
            const auto it = by_start.find(a);
            current = it != by_start.end() && !it->second->huge_known ? it->second : nullptr;
            continue;
        }
        if (!current || std::sscanf(line.c_str(), "%63[^:]: %" SCNu64 " kB", key, &kb) != 2) continue;
        const std::string k = key;
        if (k == "AnonHugePages" || k == "ShmemPmdMapped" || k == "FilePmdMapped" || k == "Shared_Hugetlb" ||
            k == "Private_Hugetlb")
            current->huge += kb * 1024 / kPage;
    }
    for (auto& m : maps) m.huge_known = m.walked;
}

// Device pages per mapping, when the process runs uhmm; false when it does not
// (or we may not ask it).
bool add_device_pages(pid_t pid, std::chrono::milliseconds timeout, std::vector<Mapping>& maps) {
    nlohmann::json ranges;
    try {
        auto client = Client::connect(pid, timeout);
        ranges = client.call({{"cmd", "ranges"}}).value("ranges", nlohmann::json::array());
    } catch (const Failure&) {
        return false;
    }
    for (const auto& r : ranges) {
        const auto start = number_or(r, "start", 0);
        for (auto& m : maps)
            if (start >= m.start && start < m.end) m.device += number_or(r, "device_pages", 0);
    }
    return true;
}

std::string pages_text(const Mapping& m, std::uint64_t pages, bool known) {
    return m.walked && known ? human_bytes(pages * kPage) : "-";
}

}  // namespace

int maps_command(const Common& common, pid_t pid) {
    if (!uhmm::control::process_uid(pid)) fail("no process " + std::to_string(pid));
    if (const auto name = kernel_thread_name(pid)) return kernel_thread(common, pid, *name);
    auto maps = parse_maps(read_proc(pid, "maps"));
    if (!walk_pagemap(pid, maps)) huge_from_smaps(pid, maps);
    const bool uhmm = add_device_pages(pid, common.timeout, maps);

    std::uint64_t total[5] = {};
    for (const auto& m : maps) {
        total[0] += m.end - m.start;
        total[1] += m.resident;
        total[2] += m.swapped;
        total[3] += m.huge;
        total[4] += m.device;
    }
    if (common.json) {
        nlohmann::json list = nlohmann::json::array();
        for (const auto& m : maps) {
            nlohmann::json j{{"start", m.start}, {"end", m.end}, {"perms", m.perms}, {"offset", m.offset},
                             {"path", m.path}};
            j["resident_pages"] = m.walked ? nlohmann::json(m.resident) : nlohmann::json();
            j["swapped_pages"] = m.walked ? nlohmann::json(m.swapped) : nlohmann::json();
            j["huge_pages"] = m.walked && m.huge_known ? nlohmann::json(m.huge) : nlohmann::json();
            if (uhmm) j["device_pages"] = m.device;
            list.push_back(std::move(j));
        }
        nlohmann::json out{{"pid", pid}, {"uhmm", uhmm}, {"mappings", list},
                           {"resident_pages", total[1]}, {"swapped_pages", total[2]}, {"huge_pages", total[3]}};
        if (uhmm) out["device_pages"] = total[4];
        print_json(out);
        return exit_ok;
    }
    std::vector<std::string> header{"START", "END", "PERM", "SIZE", "RSS", "SWAP", "HUGE"};
    std::vector<bool> right{false, false, false, true, true, true, true};
    if (uhmm) header.push_back("DEVICE"), right.push_back(true);
    header.push_back("MAPPING");
    right.push_back(false);
    Table t(header, right);
    for (const auto& m : maps) {
        std::vector<std::string> row{hex(m.start), hex(m.end), m.perms, human_bytes(m.end - m.start),
                                     pages_text(m, m.resident, true), pages_text(m, m.swapped, true),
                                     pages_text(m, m.huge, m.huge_known)};
        if (uhmm) row.push_back(human_bytes(m.device * kPage));
        row.push_back(m.path);
        t.add(std::move(row));
    }
    std::vector<std::string> row{"total", count_of(maps.size(), "mapping"), "", human_bytes(total[0]),
                                 human_bytes(total[1] * kPage), human_bytes(total[2] * kPage),
                                 human_bytes(total[3] * kPage)};
    if (uhmm) row.push_back(human_bytes(total[4] * kPage));
    row.push_back(uhmm ? "(uhmm runs here)" : "");
    t.add(std::move(row));
    t.print(stdout);
    return exit_ok;
}

}  // namespace hmmctl
