// libuhmm_preload.so's start and end: read UHMM_CONF, start the runtime or
// step aside saying why in one line, and write the statistics at exit.
//
// Start: the constructor runs once libc is initialised (libc is a
// dependency, initialised first), before the program's own constructors.
// End: the runtime is never destroyed. At exit the program's other threads
// may still run and touch managed memory, and its later exit handlers may
// too; the fault threads serve them until exit_group ends the process, and
// the kernel reclaims everything.
#include "preload/preload.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <string>

#include "base/log.hpp"
#include "preload/real.hpp"

namespace uhmm::preload {

Globals g;

namespace {

alignas(Blocks) unsigned char blocks_storage[sizeof(Blocks)];
char stats_path[4096];   // UHMM_CONF's stats=, %p not yet replaced
// When this process's runtime started, on the clock file times are taken
// from: the kernel stamps files with the coarse (tick) clock, and a fine
// clock would place a write a few milliseconds after start before it.
timespec started{};
bool stats_refused = false;   // said at start that stats= cannot be written: not again at exit

void check_stats_destination() noexcept;   // below, with expand_stats_path

// One line on stderr, written with write(2): no stdio buffers or locks.
void say(const std::string& line) noexcept {
    const std::string text = "uhmm: " + line + "\n";
    (void)!::write(STDERR_FILENO, text.data(), text.size());
}

void before_fork() noexcept {
    if (blocks_live()) g.blocks->lock();
}
void after_fork_parent() noexcept {
    if (blocks_live()) g.blocks->unlock();
}
void after_fork_child() noexcept {
    if (!blocks_live()) return;
    g.blocks->unlock();
    // The runtime's copy here is inert (its own atfork handler saw to it):
    // managed blocks are plain memory in the child.
    g.state.store(State::child, std::memory_order_release);
}

// The program's zero-initialised static data (.bss): the anonymous
// read-write mapping right after its executable's last segment. Programs
// like gzip keep their big buffers there rather than on the heap. Managed
// when it is at least min_range (the [heap] is named and never taken).
void manage_program_bss(Runtime& rt, std::size_t min_range) {
    char exe[4096];
    const ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    std::FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f) return;
    char line[4352];
    unsigned long exe_end = 0;
    while (std::fgets(line, sizeof line, f)) {
        unsigned long a = 0, b = 0, inode = 0;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line, "%lx-%lx %7s %*s %*s %lu %n", &a, &b, perms, &inode, &path_at) < 4) continue;
        std::string path = path_at > 0 ? line + path_at : "";
        while (!path.empty() && (path.back() == '\n' || path.back() == ' ')) path.pop_back();
        if (path == exe) {
            exe_end = b;
            continue;
        }
        if (exe_end && a == exe_end && inode == 0 && path.empty() && std::strcmp(perms, "rw-p") == 0 &&
            b - a >= min_range) {
            std::string why;
            if (auto ec = rt.manage(reinterpret_cast<void*>(a), b - a, &why))
                log::get().info("the program's .bss stays unmanaged: {}", why.empty() ? ec.message() : why);
            break;
        }
        exe_end = 0;
    }
    std::fclose(f);
}

void start() {
    // setuid / setgid / capability-raising exec: left alone, silently (the
    // environment is the unprivileged caller's).
    if (::getauxval(AT_SECURE)) {
        g.state.store(State::off, std::memory_order_release);
        return;
    }
    base::InternalScope internal;   // everything below allocates through the real functions
    real::resolve();
    const char* text = std::getenv("UHMM_CONF");
    std::string why;
    auto config = RuntimeConfig::parse(text ? text : "", &why);
    if (!config) {
        say(why + "; running unmanaged");
        g.state.store(State::off, std::memory_order_release);
        return;
    }
    // Registered before the runtime's own handlers, so that fork's prepare
    // runs the runtime's first (it waits for migrations in flight), then
    // takes the block table's lock.
    ::pthread_atfork(before_fork, after_fork_parent, after_fork_child);
    auto rt = Runtime::create(*config, &why);
    if (!rt) {
        // The runtime's reasons name their part: "userfaultfd ...", "arena: ...",
        // "engine: ...". Blame userfaultfd only when it is the one.
        const std::string reason = why.empty() ? rt.error().message() : why;
        say((reason.starts_with("userfaultfd") ? "" : "the runtime cannot start here: ") + reason +
            "; running unmanaged");
        g.state.store(State::off, std::memory_order_release);
        return;
    }
    g.blocks = new (blocks_storage) Blocks;
    g.min_range = config->min_range;
    std::snprintf(stats_path, sizeof stats_path, "%s", config->stats.c_str());
    ::clock_gettime(CLOCK_REALTIME_COARSE, &started);
    check_stats_destination();
    g.rt = rt->release();
    // Every mprotect goes through the hook (Runtime::protect): range_fault
    // may cache what it learns of managed memory's mappings.
    g.rt->protection_hooked(true);
    manage_program_bss(*g.rt, config->min_range);
    log::get().info("uhmm {}: configuration: {}", Runtime::version(), config->to_string());
    log::get().info("{}", g.rt->describe());
    g.state.store(State::active, std::memory_order_release);
}

// stats=PATH with each %p replaced by the process id (%% is a %).
std::string expand_stats_path() {
    std::string out;
    for (const char* c = stats_path; *c; ++c) {
        if (c[0] == '%' && c[1] == 'p') {
            out += std::to_string(::getpid());
            ++c;
        } else if (c[0] == '%' && c[1] == '%') {
            out += '%';
            ++c;
        } else {
            out += *c;
        }
    }
    return out;
}

// A stats= file that cannot be written is said at start, not only at exit:
// a program may run for hours before its figures are lost.
void check_stats_destination() noexcept {
    if (!stats_path[0]) return;
    try {
        const std::string path = expand_stats_path();
        const auto slash = path.rfind('/');
        const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
        if (::access(dir.c_str(), W_OK | X_OK) == 0) return;
        say("stats=" + path + ": cannot write in " + dir + " (" + std::strerror(errno) +
            "); the statistics will not be kept");
        stats_refused = true;
    } catch (...) {
    }
}

void finish() noexcept {
    // Only the process that runs the runtime: a fork()ed child's copy is
    // inert and its counters are the parent's (a child that execs gets a
    // runtime, and a file, of its own).
    if (state() != State::active || !stats_path[0]) {
        if (state() == State::active) log::flush();
        return;
    }
    base::InternalScope internal;
    try {
        const std::string path = expand_stats_path();
        // Without %p every process of a multi-process run (a pipeline, a
        // build: children inherit UHMM_CONF) writes this one file and the
        // last one wins. Say so when another process wrote it while this
        // one ran, rather than lose its figures silently.
        struct stat st {};
        if (std::strstr(stats_path, "%p") == nullptr && ::stat(path.c_str(), &st) == 0 &&
            (st.st_mtim.tv_sec > started.tv_sec ||
             (st.st_mtim.tv_sec == started.tv_sec && st.st_mtim.tv_nsec >= started.tv_nsec)))
            say("stats=" + path + ": another process wrote it while this one ran, and this one overwrites it; "
                "add %p to the path for one file per process");
        const std::string json = g.rt->stats_json() + "\n";
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if ((fd < 0 || ::write(fd, json.data(), json.size()) != static_cast<ssize_t>(json.size())) && !stats_refused)
            say("cannot write the statistics to " + path + ": " + std::strerror(errno));
        if (fd >= 0) ::close(fd);
    } catch (...) {
        say("cannot write the statistics: out of memory");
    }
    log::flush();
}

}  // namespace

}  // namespace uhmm::preload

// Exceptions never leave these: start() and finish() catch what they call.
__attribute__((constructor)) static void uhmm_preload_start() {
    try {
        uhmm::preload::start();
    } catch (...) {
        uhmm::preload::g.state.store(uhmm::preload::State::off, std::memory_order_release);
    }
}

__attribute__((destructor)) static void uhmm_preload_finish() { uhmm::preload::finish(); }
