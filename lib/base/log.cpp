// The runtime's async logger (see log.hpp for why it is async).
#include "base/log.hpp"

#include <spdlog/async.h>
#include <spdlog/sinks/stdout_sinks.h>

#include <mutex>

#include "base/internal.hpp"

namespace uhmm::log {

namespace {

std::shared_ptr<spdlog::logger> make_logger() {
    // A private thread pool, so that the host program's own use of spdlog
    // (with its default pool) is never disturbed by ours. Never destroyed:
    // the runtime's threads may log while the process runs its exit
    // handlers (the preload library leaves them running to the end).
    // 128 queued messages: the runtime logs rarely (warnings, errors, an
    // info dump), and with overrun_oldest a burst loses its oldest lines
    // rather than blocking. The queue's slots are built up front (~350 bytes
    // each): spdlog's usual 8192 made every preloaded exec fault in ~3 MB,
    // 20-30 ms of each /bin/true on the machines measured.
    constexpr std::size_t kQueuedMessages = 128;
    static auto* pool = new std::shared_ptr<spdlog::details::thread_pool>(std::make_shared<spdlog::details::thread_pool>(
        kQueuedMessages, 1, [] { base::mark_internal_thread(); }));
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    auto logger = std::make_shared<spdlog::async_logger>(
        "uhmm", std::move(sink), *pool, spdlog::async_overflow_policy::overrun_oldest);
    logger->set_pattern("uhmm: %l: %v");
    logger->set_level(spdlog::level::warn);
    logger->flush_on(spdlog::level::err);
    return logger;
}

}  // namespace

spdlog::logger& get() {
    static auto* logger = new std::shared_ptr<spdlog::logger>(make_logger());   // never destroyed (see the pool)
    return **logger;
}

bool set_level(std::string_view name) {
    const auto level = spdlog::level::from_str(std::string(name));
    // from_str answers "off" for anything it does not know; accept "off" only
    // when it was asked for.
    if (level == spdlog::level::off && name != "off") return false;
    get().set_level(level);
    return true;
}

void flush() { get().flush(); }

}  // namespace uhmm::log
