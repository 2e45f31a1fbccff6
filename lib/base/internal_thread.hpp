// How the runtime starts a thread of its own: every signal blocked (the
// application's handlers must not run on it, and a process-directed signal
// must reach one of the application's threads), marked internal (see
// internal.hpp) and named for ps and gdb (at most 15 characters).
#pragma once

#include <pthread.h>
#include <signal.h>

#include <thread>
#include <utility>

#include "base/internal.hpp"

namespace uhmm::base {

template <class Fn>
std::thread start_internal_thread(const char* name, Fn&& fn) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);   // the new thread inherits this mask
    std::thread t([name, fn = std::forward<Fn>(fn)]() mutable {
        mark_internal_thread();
        ::pthread_setname_np(::pthread_self(), name);
        fn();
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    return t;
}

}  // namespace uhmm::base
