// "This is the runtime itself": a thread-local mark on the runtime's own
// threads (fault readers, copy completion, CPU copy worker, invalidation
// delivery, the policy, the logger) and around the calls the preload
// library's hooks make into the runtime.
//
// The preload library interposes malloc and mmap for the whole process,
// the runtime included. A marked thread or call goes straight to the real
// functions: the runtime must never manage (and so never fault on, or wait
// for) its own page tables, rings and buffers.
#pragma once

namespace uhmm::base {

// initial-exec: the preload library is loaded at start-up, so its TLS sits
// in the static block and reading it never calls malloc (a dynamic TLS
// block would be allocated lazily, through the very malloc being hooked).
#if defined(__GNUC__)
#define UHMM_TLS_IE __attribute__((tls_model("initial-exec")))
#else
#define UHMM_TLS_IE
#endif

inline thread_local bool internal_flag UHMM_TLS_IE = false;

inline bool internal() noexcept { return internal_flag; }

// At the top of every thread the runtime starts.
inline void mark_internal_thread() noexcept { internal_flag = true; }

// Around a hook's call into the runtime.
class InternalScope {
public:
    InternalScope() noexcept : previous_(internal_flag) { internal_flag = true; }
    ~InternalScope() { internal_flag = previous_; }
    InternalScope(const InternalScope&) = delete;
    InternalScope& operator=(const InternalScope&) = delete;

private:
    bool previous_;
};

}  // namespace uhmm::base
