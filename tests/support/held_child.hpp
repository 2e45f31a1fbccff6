// A fork()ed child that keeps sharing the parent's pages (copy-on-write)
// until released, then runs its check and exits with the result. For tests of
// what a live child changes: refused moves, copy-on-write, forked data.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <optional>

namespace uhmm::test {

class HeldChild {
public:
    // `check` runs in the child after release(); true: exit 0, false: exit 1.
    template <class Check> explicit HeldChild(Check check) {
        if (::pipe(hold_) != 0) return;
        pid_ = ::fork();
        if (pid_ == 0) {
            char c;
            (void)!::read(hold_[0], &c, 1);
            ::_exit(check() ? 0 : 1);
        }
    }
    ~HeldChild() {
        release();
        (void)wait();
        ::close(hold_[0]);
        ::close(hold_[1]);
    }
    HeldChild(const HeldChild&) = delete;
    HeldChild& operator=(const HeldChild&) = delete;

    bool started() const { return pid_ > 0; }
    void release() {
        if (!released_ && pid_ > 0) (void)!::write(hold_[1], "x", 1);
        released_ = true;
    }
    // The child's exit status (released first); nullopt when it did not start
    // or was not a normal exit.
    std::optional<int> wait() {
        release();
        if (pid_ <= 0) return std::nullopt;
        int status = 0;
        const pid_t got = ::waitpid(pid_, &status, 0);
        pid_ = -1;
        if (got <= 0 || !WIFEXITED(status)) return std::nullopt;
        return WEXITSTATUS(status);
    }

private:
    int hold_[2] = {-1, -1};
    pid_t pid_ = -1;
    bool released_ = false;
};

}  // namespace uhmm::test
