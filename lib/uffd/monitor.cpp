// The fault monitor: reader threads that serve one userfaultfd.
//
// Shape, and why:
// - Each reader sleeps in ppoll() on the userfaultfd and a stop eventfd, then
//   drains what is pending with non-blocking reads (several messages per
//   read(2): a kernel entry costs ~1 µs here, a cross-CPU wake-up ~17 µs).
// - Non-fault events of a batch are handed over before its faults: while an
//   UNMAP/REMOVE/REMAP/FORK event is unread, every resolve ioctl fails with
//   EAGAIN (mmap_changing), and the thread that called munmap/madvise waits
//   for that read — so reading events promptly is what unblocks everyone.
// - A fault whose resolve said "retry" is parked and re-driven after the next
//   read, or after retry_interval_us when nothing arrives (the kernel clears
//   mmap_changing only once the event's caller has run again). Never a
//   blocking retry loop: new messages keep being served meanwhile.
// - With several readers, reads are serialised and numbered: a batch's faults
//   are handled only after every event read before them has been handled.
//   The thread behind an event (madvise, munmap, mremap) returns as soon as
//   the event is *read*, and may touch the memory at once; without the order,
//   another reader could serve that touch from state the event invalidates.
// - Readers may be kept one on each CPU (MonitorOptions::cpus): a fault is
//   then usually served on the CPU that took it, with no cross-CPU wake-up.
//   A reader that finds another reading spins briefly for the lock before
//   sleeping on it (see reader_loop).
// - The readers block every signal (the application's handlers must not run on
//   them), take no lock an application thread can hold, and touch no
//   registered memory: the message buffer and parked list are their own.
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <latch>
#include <cstdio>
#include <cstring>

#include "base/internal.hpp"
#include "base/log.hpp"
#include "uffd/compat.hpp"
#include "base/private_fds.hpp"

#include <uhmm/uffd.hpp>

namespace uhmm::uffd {

namespace {

// At most this many reads per wake-up before the batch is dispatched, so a
// flood of faults cannot starve the parked ones.
constexpr unsigned kMaxReadsPerWake = 4;

// Parked faults are held in vectors reserved up front: a fault parks exactly
// when an event is pending, and the thread behind that event may be in fork()
// holding malloc's locks, so parking must not allocate. One entry per thread
// blocked in a fault; beyond this the vector grows (and could then block).
constexpr std::size_t kParkedReserve = 4096;

// Tries of the read lock before sleeping on it (see reader_loop): about ten
// microseconds of pause instructions.
constexpr unsigned kReadLockSpins = 512;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
}

template <class... F> struct Overloaded : F... { using F::operator()...; };
template <class... F> Overloaded(F...) -> Overloaded<F...>;

}  // namespace

Monitor::Monitor(Uffd& uffd, Handler& handler, MonitorOptions options)
    : uffd_(uffd), handler_(handler), options_(options) {
    if (!options_.cpus.empty()) options_.threads = static_cast<unsigned>(options_.cpus.size());
    if (options_.threads == 0) options_.threads = 1;
    if (options_.batch == 0) options_.batch = 1;
}

Monitor::~Monitor() { stop(); }

std::error_code Monitor::start() {
    if (running()) return std::make_error_code(std::errc::device_or_resource_busy);
    stop_fd_.reset(base::hide_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)));
    if (!stop_fd_) return last_errno();
    stopping_.store(false, std::memory_order_release);
    parked_.reserve(kParkedReserve);

    // Threads inherit the creator's signal mask: block everything while
    // spawning so that no signal can land on a reader before it masks itself.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // start() returns only when every reader has allocated what it needs and
    // is about to poll: a reader still in malloc when the application forks
    // would wait for malloc's locks while fork() waits for the reader.
    std::latch ready(options_.threads);
    std::error_code ec;
    unsigned started = 0;
    try {
        for (; started < options_.threads; ++started) {
            readers_.emplace_back([this, i = started, &ready] {
                base::mark_internal_thread();
                char name[16];
                std::snprintf(name, sizeof name, "uhmm-fault-%u", i);
                pthread_setname_np(pthread_self(), name);
                reader_loop(i, ready);
            });
        }
    } catch (const std::system_error& e) {
        ec = e.code();
        for (; started < options_.threads; ++started) ready.count_down();
    }
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ready.wait();
    running_.store(true, std::memory_order_release);
    if (ec) stop(false);
    return ec;
}

void Monitor::stop(bool release_parked) noexcept {
    if (!readers_.empty()) {
        stopping_.store(true, std::memory_order_release);
        const std::uint64_t one = 1;
        // An eventfd write of 1 keeps it readable: every reader sees it.
        (void)!::write(stop_fd_.get(), &one, sizeof one);
        for (auto& t : readers_) t.join();
        readers_.clear();
    }
    running_.store(false, std::memory_order_release);
    {
        std::lock_guard lock(parked_lock_);
        parked_.clear();
        parked_count_.store(0, std::memory_order_relaxed);
    }
    // Wake every application thread still parked in one of our faults: with
    // the ranges unregistered, its access completes as ordinary memory.
    if (release_parked) uffd_.unregister_all();
}

MonitorStats Monitor::stats() const noexcept {
    const auto ld = [](const std::atomic<std::uint64_t>& a) { return a.load(std::memory_order_relaxed); };
    return {ld(counters_.reads), ld(counters_.messages), ld(counters_.faults),
            ld(counters_.events), ld(counters_.deferred), ld(counters_.redriven)};
}

void Monitor::reader_loop(unsigned index, std::latch& ready) noexcept {
    if (index < options_.cpus.size()) {
        // Best effort: a CPU taken away since the placement was read (cpuset,
        // hotplug) leaves this reader where the scheduler puts it.
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(options_.cpus[index], &set);
        if (int rc = pthread_setaffinity_np(pthread_self(), sizeof set, &set))
            log::get().debug("fault monitor: reader {} not kept on CPU {}: {}", index, options_.cpus[index],
                             std::strerror(rc));
    }
    // Everything this thread needs, allocated before it serves anything.
    std::vector<uffd_msg> buf(options_.batch);
    std::vector<Event> events;
    events.reserve(std::size_t{options_.batch} * kMaxReadsPerWake);
    std::vector<PageFault> redrive;
    redrive.reserve(kParkedReserve);
    ready.count_down();

    while (!stopping_.load(std::memory_order_acquire)) {
        std::array<pollfd, 2> fds{{{uffd_.fd(), POLLIN, 0}, {stop_fd_.get(), POLLIN, 0}}};
        const bool have_parked = parked_count_.load(std::memory_order_acquire) > 0;
        const timespec retry{0, static_cast<long>(options_.retry_interval_us) * 1000};
        const int rc = ::ppoll(fds.data(), fds.size(), have_parked ? &retry : nullptr, nullptr);
        if (stopping_.load(std::memory_order_acquire)) break;
        if (rc < 0 && errno != EINTR) {
            log::get().error("fault monitor: ppoll failed: {}", std::strerror(errno));
            ::usleep(1000);
            continue;
        }

        events.clear();
        // Every reader wakes for each message (they poll one descriptor), and
        // one of them takes the read lock. The others wait for it by spinning
        // a little first: the holder is between its ppoll and its read, a few
        // microseconds, and a waiter asleep on the lock would cost the holder
        // a futex wake on its way out, on the faulting thread's critical path
        // (with a reader on each CPU, random device-page touches took
        // 1.0-1.13x the raw round trip that way, 0.85x with the spin;
        // bench_runtime_touch parts=random, 2-core VM). Only a little: a
        // holder preempted by the program's threads must not be waited for
        // by burning a CPU (going back to ppoll, which returns at once while
        // the message is unread, did exactly that under load).
        std::unique_lock order(read_lock_, std::try_to_lock);
        for (unsigned spin = 0; !order.owns_lock() && spin < kReadLockSpins; ++spin) {
            cpu_relax();
            (void)order.try_lock();
        }
        if (!order.owns_lock()) order.lock();
        for (unsigned r = 0; r < kMaxReadsPerWake; ++r) {
            const ssize_t n = ::read(uffd_.fd(), buf.data(), buf.size() * sizeof(uffd_msg));
            if (n <= 0) {
                // EAGAIN: another reader took them, or nothing was pending.
                if (n < 0 && errno != EAGAIN && errno != EINTR)
                    log::get().error("fault monitor: read failed: {}", std::strerror(errno));
                break;
            }
            const auto count = static_cast<std::size_t>(n) / sizeof(uffd_msg);
            counters_.reads.fetch_add(1, std::memory_order_relaxed);
            counters_.messages.fetch_add(count, std::memory_order_relaxed);
            for (std::size_t i = 0; i < count; ++i) {
                Event e;
                if (decode(&buf[i], e)) events.push_back(std::move(e));
            }
            if (count < buf.size()) break;   // drained
        }
        const bool has_events = std::any_of(events.begin(), events.end(), [](const Event& e) {
            return !std::holds_alternative<PageFault>(e);
        });
        // Event batches are numbered while the read lock is held; a batch waits
        // for every event batch numbered before its read.
        const std::uint64_t ticket = has_events ? ++event_batches_read_ : event_batches_read_;
        order.unlock();
        if (!events.empty()) dispatch(events, has_events ? ticket - 1 : ticket, has_events ? ticket : 0);
        if (parked_count_.load(std::memory_order_acquire) > 0) redrive_parked(redrive);
    }
}

void Monitor::wait_events_handled() noexcept {
    std::uint64_t read_so_far;
    {
        // Under the read lock: a batch read before now has its number.
        std::lock_guard order(read_lock_);
        read_so_far = event_batches_read_;
    }
    wait_for_events_handled(read_so_far);
}

void Monitor::wait_for_events_handled(std::uint64_t batches) noexcept {
    // Short: event handlers never wait for application threads.
    while (event_batches_handled_.load(std::memory_order_acquire) < batches) std::this_thread::yield();
}

void Monitor::dispatch(std::vector<Event>& events, std::uint64_t after, std::uint64_t ticket) noexcept {
    wait_for_events_handled(after);
    // Events first, in the order the kernel queued them.
    for (auto& e : events) {
        if (std::holds_alternative<PageFault>(e)) continue;
        counters_.events.fetch_add(1, std::memory_order_relaxed);
        std::visit(Overloaded{
                       [](PageFault&) {},
                       [this](Remove& r) { handler_.on_remove(r); },
                       [this](Unmap& u) { handler_.on_unmap(u); },
                       [this](Remap& r) {
                           uffd_.note_remap(r);
                           handler_.on_remap(r);
                       },
                       // A child fd the handler did not take is closed now, not
                       // at the next wake-up: the child may already be parked
                       // in a fault that only the close releases.
                       [this](Fork& f) {
                           handler_.on_fork(f);
                           f.uffd.reset();
                       },
                   },
                   e);
    }
    if (ticket) event_batches_handled_.store(ticket, std::memory_order_release);
    for (auto& e : events) {
        auto* fault = std::get_if<PageFault>(&e);
        if (!fault) continue;
        counters_.faults.fetch_add(1, std::memory_order_relaxed);
        if (handler_.on_fault(*fault) == FaultDisposition::retry_later) {
            counters_.deferred.fetch_add(1, std::memory_order_relaxed);
            std::lock_guard lock(parked_lock_);
            parked_.push_back(*fault);
            parked_count_.store(parked_.size(), std::memory_order_release);
        }
    }
}

void Monitor::redrive_parked(std::vector<PageFault>& batch) noexcept {
    // Swap the parked list with this reader's empty, reserved scratch vector:
    // no allocation, and each parked fault is re-driven by one reader only.
    batch.clear();
    {
        std::lock_guard lock(parked_lock_);
        batch.swap(parked_);
        parked_count_.store(0, std::memory_order_release);
    }
    for (const auto& fault : batch) {
        counters_.redriven.fetch_add(1, std::memory_order_relaxed);
        if (handler_.on_fault(fault) == FaultDisposition::retry_later) {
            std::lock_guard lock(parked_lock_);
            parked_.push_back(fault);
            parked_count_.store(parked_.size(), std::memory_order_release);
        }
    }
}

}  // namespace uhmm::uffd
