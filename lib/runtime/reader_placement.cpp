// Fault readers, one on each CPU.
//
// Why: on this kind of machine a fault served by one reader costs two
// cross-CPU wake-ups (the reader's, then the faulting thread's), ~17 µs each
// in a VM, against ~1 µs of real work. The faulting thread sleeps in the
// kernel, so its CPU goes idle at once: a reader kept on that CPU is woken
// there without an IPI, serves the fault, and wakes the faulting thread on
// the same CPU, again without one. Every reader polls the same userfaultfd,
// so all of them wake for each message; the one on the faulting CPU usually
// reads it first, and the others go back to sleep (EAGAIN). Readers cost
// nothing while the program is idle: they sleep in ppoll.
#include "runtime/reader_placement.hpp"

#include <sched.h>

namespace uhmm {

uffd::MonitorOptions place_readers(unsigned configured) {
    uffd::MonitorOptions options;
    if (configured != 0) {
        options.threads = configured;
        return options;
    }
    cpu_set_t set;
    CPU_ZERO(&set);
    std::vector<int> cpus;
    if (::sched_getaffinity(0, sizeof set, &set) == 0)
        for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu)
            if (CPU_ISSET(cpu, &set)) cpus.push_back(cpu);
    if (cpus.empty()) {
        options.threads = 1;
    } else if (cpus.size() <= kMaxAutoReaders) {
        options.threads = static_cast<unsigned>(cpus.size());
        options.cpus = std::move(cpus);
    } else {
        options.threads = kMaxAutoReaders;
    }
    return options;
}

}  // namespace uhmm
