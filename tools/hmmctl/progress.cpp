// The progress bar (see the header).
#include "progress.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

#include "format.hpp"

namespace hmmctl {

namespace {
constexpr auto kQuiet = std::chrono::milliseconds(300);   // shorter work shows no bar
constexpr int kWidth = 30;
}  // namespace

ProgressBar::ProgressBar() : tty_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}

void ProgressBar::update(std::uint64_t done_pages, std::uint64_t total_pages) {
    const auto elapsed = std::chrono::steady_clock::now() - start_;
    if (!tty_ || total_pages == 0 || (!shown_ && elapsed < kQuiet)) return;
    shown_ = true;
    const double fraction = static_cast<double>(done_pages) / static_cast<double>(total_pages);
    const int filled = static_cast<int>(fraction * kWidth);
    const double seconds = std::chrono::duration<double>(elapsed).count();
    const double gbps = seconds > 0 ? static_cast<double>(done_pages) * 4096 / seconds / 1e9 : 0;
    std::fprintf(stderr, "\r[%s%s] %3d%%  %s of %s  %s GB/s\x1b[K", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, ' ').c_str(), static_cast<int>(fraction * 100),
                 human_bytes(done_pages * 4096).c_str(), human_bytes(total_pages * 4096).c_str(),
                 fixed(gbps, 2).c_str());
    std::fflush(stderr);
}

void ProgressBar::finish() {
    if (!shown_) return;
    std::fprintf(stderr, "\r\x1b[K");
    std::fflush(stderr);
    shown_ = false;
}

}  // namespace hmmctl
