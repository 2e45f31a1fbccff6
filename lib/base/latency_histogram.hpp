// A lock-free histogram of durations for percentiles (the fault service
// time hmmctl stat reports): buckets by the power of two, each split in
// four, so a percentile is within 19% of the truth; relaxed atomics, one
// increment per sample, safe from any thread (the fault path included).
#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <cstdint>

namespace uhmm {

class LatencyHistogram {
public:
    void record(std::uint64_t ns) noexcept { buckets_[bucket_of(ns)].fetch_add(1, std::memory_order_relaxed); }

    std::uint64_t count() const noexcept {
        std::uint64_t n = 0;
        for (const auto& b : buckets_) n += b.load(std::memory_order_relaxed);
        return n;
    }
    // The upper bound of the bucket holding quantile q (0..1); 0 when empty.
    std::uint64_t percentile(double q) const noexcept {
        std::array<std::uint64_t, kBuckets> snap{};
        std::uint64_t total = 0;
        for (std::size_t i = 0; i < kBuckets; ++i) total += snap[i] = buckets_[i].load(std::memory_order_relaxed);
        if (!total) return 0;
        const auto rank = static_cast<std::uint64_t>(q * static_cast<double>(total - 1));
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < kBuckets; ++i) {
            seen += snap[i];
            if (seen > rank) return upper_of(i);
        }
        return upper_of(kBuckets - 1);
    }

private:
    static constexpr std::size_t kSub = 4;                 // buckets per power of two
    static constexpr std::size_t kBuckets = 64 * kSub;

    // Values below 4 get a bucket each; then 4 per power of two.
    static std::size_t bucket_of(std::uint64_t v) noexcept {
        if (v < kSub) return static_cast<std::size_t>(v);
        const unsigned log = 63u - static_cast<unsigned>(std::countl_zero(v));   // ≥ 2
        const auto sub = static_cast<std::size_t>((v >> (log - 2)) & (kSub - 1));
        return (log - 1) * kSub + sub;
    }
    static std::uint64_t upper_of(std::size_t i) noexcept {
        if (i < kSub) return i;
        const std::size_t log = i / kSub + 1, sub = i % kSub;
        if (log >= 63) return ~std::uint64_t{0};
        return ((std::uint64_t{kSub} + sub + 1) << (log - 2)) - 1;
    }

    std::array<std::atomic<std::uint64_t>, kBuckets> buckets_{};
};

}  // namespace uhmm
