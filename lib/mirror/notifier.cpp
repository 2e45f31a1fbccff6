// Interval notifiers (see include/uhmm/mirror.hpp for the protocol).
#include <uhmm/mirror.hpp>

#include <algorithm>

#include "base/log.hpp"

namespace uhmm::mirror {

namespace {
constexpr std::uintptr_t kPageMask = 4095;

struct StartKey {
    bool operator()(const Notifier& n, std::uintptr_t a) const noexcept { return n.start() < a; }
    bool operator()(std::uintptr_t a, const Notifier& n) const noexcept { return a < n.start(); }
};
}  // namespace

std::string_view to_string(Event e) noexcept {
    switch (e) {
        case Event::unmap: return "unmap";
        case Event::clear: return "clear";
        case Event::protection: return "protection";
        case Event::migrate: return "migrate";
        case Event::release: return "release";
        case Event::fork: return "fork";
    }
    return "?";
}

// ---- Notifier ---------------------------------------------------------------------------

std::error_code Notifier::populate(std::uintptr_t, std::uintptr_t) noexcept {
    return std::make_error_code(std::errc::not_supported);
}

std::uint64_t Notifier::read_begin() const {
    std::unique_lock lock(mutex_);
    idle_.wait(lock, [&] { return in_flight_ == 0; });
    return seq_.load(std::memory_order_acquire);
}

void Notifier::begin_invalidation(std::uint64_t seq) {
    // A new odd value before every callback, even when another invalidation
    // of this notifier is already running: read_retry() then sees every
    // invalidation that began after read_begin().
    std::lock_guard lock(mutex_);
    ++in_flight_;
    seq_.store(seq, std::memory_order_release);
}

void Notifier::end_invalidation() {
    {
        std::lock_guard lock(mutex_);
        if (--in_flight_ != 0) return;
        seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_release);   // even: stable
    }
    idle_.notify_all();
}

// ---- NotifierRegistry ---------------------------------------------------------------------

NotifierRegistry::~NotifierRegistry() {
    std::unique_lock lock(lock_);
    set_.clear_and_dispose([](Notifier* n) { n->registry_ = nullptr; });
    count_.store(0);
}

std::error_code NotifierRegistry::insert(Notifier& n, std::uintptr_t start, std::size_t len) {
    if (len == 0 || (start & kPageMask) || (len & kPageMask) || start + len < start)
        return std::make_error_code(std::errc::invalid_argument);
    std::unique_lock lock(lock_);
    if (n.registry_) return std::make_error_code(std::errc::device_or_resource_busy);
    n.start_ = start;
    n.end_ = start + len;
    n.registry_ = this;
    set_.insert(n);
    count_.fetch_add(1, std::memory_order_seq_cst);
    max_len_ = std::max<std::uintptr_t>(max_len_, len);
    return {};
}

void NotifierRegistry::remove(Notifier& n) {
    // The exclusive lock waits for every invalidation in flight (they hold
    // it shared for their whole run), callbacks of `n` included.
    std::unique_lock lock(lock_);
    if (n.registry_ != this) return;
    set_.erase(set_.iterator_to(n));
    count_.fetch_sub(1, std::memory_order_seq_cst);
    n.registry_ = nullptr;
}

template <class F>
void NotifierRegistry::for_each_overlapping(std::uintptr_t start, std::uintptr_t end, F&& f) const {
    // Intervals are sorted by start; none is longer than max_len_, so the
    // first that can reach `start` begins at start - max_len_ or later.
    const std::uintptr_t from = start > max_len_ ? start - max_len_ : 0;
    for (auto it = set_.lower_bound(from, StartKey{}); it != set_.end() && it->start() < end; ++it) {
        if (it->end() <= start) continue;
        if (!f(const_cast<Notifier&>(*it))) return;
    }
}

NotifierRegistry::Outcome NotifierRegistry::invalidate(const Invalidation& inv) {
    Window window;
    return start(inv, window);   // ends here: the change was made before
}

NotifierRegistry::Outcome NotifierRegistry::start(const Invalidation& inv, Window& window) {
    window.end();
    window.lock_ = std::shared_lock(lock_);
    window.registry_ = this;
    window.start_ = inv.start;
    window.end_ = inv.end;
    Outcome out = Outcome::done;
    for_each_overlapping(inv.start, inv.end, [&](Notifier& n) {
        const std::uint64_t seq = next_seq_.fetch_add(2, std::memory_order_relaxed);
        n.begin_invalidation(seq);
        ++window.begun_;
        if (n.invalidate(inv, seq)) return true;
        if (inv.blockable) {
            // The contract allows "would block" only when the caller cannot
            // wait; treat it as done, and say so once.
            static std::atomic<bool> said{false};
            if (!said.exchange(true))
                log::get().error("mirror: a notifier answered 'would block' to a blockable {} invalidation",
                                 to_string(inv.event));
            return true;
        }
        out = Outcome::would_block;
        return false;
    });
    if (out == Outcome::would_block) window.end();
    return out;
}

void NotifierRegistry::Window::end() noexcept {
    if (!registry_) return;
    // The registry cannot have changed: the shared lock kept insert and
    // remove out, so the same walk meets the same notifiers.
    std::size_t left = begun_;
    if (left)
        registry_->for_each_overlapping(start_, end_, [&](Notifier& n) {
            n.end_invalidation();
            return --left != 0;
        });
    begun_ = 0;
    registry_ = nullptr;
    lock_ = {};
}

std::size_t NotifierRegistry::size() const {
    std::shared_lock lock(lock_);
    return set_.size();
}

bool NotifierRegistry::watched(std::uintptr_t start, std::uintptr_t end) const {
    std::shared_lock lock(lock_);
    bool any = false;
    for_each_overlapping(start, end, [&](Notifier&) { return !(any = true); });
    return any;
}

bool NotifierRegistry::with_inserted(const Notifier* n, const std::function<void(Notifier&)>& fn) const {
    std::shared_lock lock(lock_);
    for (auto& candidate : set_) {
        if (&candidate != n) continue;
        fn(const_cast<Notifier&>(candidate));
        return true;
    }
    return false;
}

}  // namespace uhmm::mirror
