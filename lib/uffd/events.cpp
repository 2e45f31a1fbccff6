// Typed events: one switch on the message type (criu's handle_uffd_event),
// and the non-blocking batch read.
#include <unistd.h>

#include "uffd/compat.hpp"

#include <uhmm/uffd.hpp>

namespace uhmm::uffd {

static_assert(sizeof(uffd_msg) == 32, "uffd_msg is 32 bytes in every uapi version");

bool decode(const void* raw, Event& out) noexcept {
    const auto& msg = *static_cast<const uffd_msg*>(raw);
    switch (msg.event) {
        case UFFD_EVENT_PAGEFAULT: {
            const auto flags = msg.arg.pagefault.flags;
            out = PageFault{
                static_cast<std::uintptr_t>(msg.arg.pagefault.address),
                (flags & UFFD_PAGEFAULT_FLAG_WRITE) != 0,
                (flags & UFFD_PAGEFAULT_FLAG_WP) != 0,
                (flags & UFFD_PAGEFAULT_FLAG_MINOR) != 0,
                static_cast<pid_t>(msg.arg.pagefault.feat.ptid),
            };
            return true;
        }
        case UFFD_EVENT_REMOVE:
            out = Remove{static_cast<std::uintptr_t>(msg.arg.remove.start),
                         static_cast<std::uintptr_t>(msg.arg.remove.end)};
            return true;
        case UFFD_EVENT_UNMAP:
            out = Unmap{static_cast<std::uintptr_t>(msg.arg.remove.start),
                        static_cast<std::uintptr_t>(msg.arg.remove.end)};
            return true;
        case UFFD_EVENT_REMAP:
            out = Remap{static_cast<std::uintptr_t>(msg.arg.remap.from),
                        static_cast<std::uintptr_t>(msg.arg.remap.to),
                        static_cast<std::size_t>(msg.arg.remap.len)};
            return true;
        case UFFD_EVENT_FORK:
            out = Fork{Fd(static_cast<int>(msg.arg.fork.ufd))};
            return true;
        default:
            return false;
    }
}

Result<std::vector<Event>> Uffd::read_events(std::size_t max) {
    std::vector<uffd_msg> buf(max);
    const ssize_t n = ::read(fd_.get(), buf.data(), buf.size() * sizeof(uffd_msg));
    std::vector<Event> events;
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return events;
        return last_errno();
    }
    const auto count = static_cast<std::size_t>(n) / sizeof(uffd_msg);
    events.reserve(count);
    for (std::size_t i = 0; i < count; ++i) {
        Event e;
        if (decode(&buf[i], e)) events.push_back(std::move(e));
    }
    return events;
}

}  // namespace uhmm::uffd
