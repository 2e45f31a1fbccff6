// What every placement policy shares: a thread of its own that runs one
// round per period, started with the runtime and stopped first when the
// runtime goes, and the counts of what it did. A policy uses only the
// runtime's public calls, and its migrations are non-blockable (a busy
// device makes one give up, EAGAIN, and a later round tries again).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <thread>

namespace uhmm::policy {

class Policy {
public:
    virtual ~Policy();
    Policy(const Policy&) = delete;
    Policy& operator=(const Policy&) = delete;

    // One round now, from the calling thread (the policy's thread runs one
    // per period; rounds never overlap): returns the pages it moved.
    std::size_t round();

    std::uint64_t rounds() const;
    std::uint64_t migrations() const;   // migrate calls that moved at least one page

    // Stop the thread after its round (a derived class's destructor calls
    // this first, so that no round runs on a half-destroyed policy; the
    // runtime calls it when it replaces the policy). Idempotent.
    void stop() noexcept;

protected:
    Policy() = default;
    // Start the thread, named `name` (at most 15 characters).
    void start(const char* name, std::chrono::milliseconds period);

    struct Moved {
        std::size_t pages = 0;
        std::uint64_t calls = 0;   // migrate calls that moved at least one page
    };
    virtual Moved step() = 0;   // one round's work

private:
    void run(std::chrono::milliseconds period);

    std::mutex round_lock_;   // rounds one at a time
    mutable std::mutex m_;
    std::condition_variable wake_;
    bool stopping_ = false;
    std::uint64_t rounds_ = 0, migrations_ = 0;
    std::thread thread_;
};

}  // namespace uhmm::policy
