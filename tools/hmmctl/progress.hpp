// A progress bar on stderr, drawn only when stderr is a terminal and the
// work has lasted long enough to be worth watching; erased at the end.
#pragma once

#include <chrono>
#include <cstdint>

namespace hmmctl {

class ProgressBar {
public:
    ProgressBar();
    ~ProgressBar() { finish(); }
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    void update(std::uint64_t done_pages, std::uint64_t total_pages);
    void finish();

private:
    bool tty_;
    bool shown_ = false;
    std::chrono::steady_clock::time_point start_;
};

}  // namespace hmmctl
