// The runtime's own zaps, told apart from the application's.
//
// Migration to the device ends by zapping the host pages with
// madvise(MADV_DONTNEED), which the kernel reports as UFFD_EVENT_REMOVE, the
// same event as the application's own DONTNEED. The zapping thread claims a
// slot for exactly the run it zaps; its events come in address order, one
// per VMA the run spans, so a Remove that starts exactly where the claim's
// cursor stands (and ends inside the run) is ours and moves the cursor on.
// An application DONTNEED racing with ours is then told apart unless it
// starts at that very address (see docs/ARCHITECTURE.md). Fixed slots,
// atomics only: the fault thread checks them without locks or allocation.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <thread>

namespace uhmm::migrate {

class SelfZaps {
    struct Slot {
        std::atomic<std::uintptr_t> start{0}, end{0}, cursor{0};
    };

public:
    static constexpr std::size_t kSlots = 64;

    // Holds a slot for [start, end) while the zap runs.
    class Claim {
    public:
        Claim(SelfZaps& zaps, std::uintptr_t start, std::uintptr_t end) noexcept : zaps_(zaps) {
            for (;;) {
                for (auto& s : zaps_.slots_) {
                    std::uintptr_t free = 0;
                    if (s.start.compare_exchange_strong(free, start, std::memory_order_acq_rel)) {
                        s.cursor.store(start, std::memory_order_release);
                        s.end.store(end, std::memory_order_release);
                        slot_ = &s;
                        return;
                    }
                }
                std::this_thread::yield();   // 64 zaps at once: wait for one to end
            }
        }
        ~Claim() {
            slot_->end.store(0, std::memory_order_release);
            slot_->start.store(0, std::memory_order_release);
        }
        Claim(const Claim&) = delete;
        Claim& operator=(const Claim&) = delete;

    private:
        SelfZaps& zaps_;
        Slot* slot_ = nullptr;
    };

    // Whether the Remove event [start, end) is (the next part of) one of our
    // zaps; consumes it. Called by the fault thread only.
    bool is_own(std::uintptr_t start, std::uintptr_t end) noexcept {
        for (auto& s : slots_) {
            const std::uintptr_t b = s.start.load(std::memory_order_acquire);
            const std::uintptr_t e = s.end.load(std::memory_order_acquire);
            if (!b || !e || end > e) continue;
            std::uintptr_t at = start;
            if (s.cursor.compare_exchange_strong(at, end, std::memory_order_acq_rel)) return true;
        }
        return false;
    }

private:
    std::array<Slot, kSlots> slots_;
};

}  // namespace uhmm::migrate
