// A std::vector on the device and back, as a CUDA program does it with
// managed memory and cudaMemPrefetchAsync:
//
//   1. two vectors x and y (std::vector<float, uhmm::allocator<float>>) are
//      filled on the CPU;
//   2. prefetched to the device for a SoftDevice (the reference device): the
//      pages move to device memory and are reported to that device as its own;
//   3. the device runs a "kernel", y = a*x + y: it reads the pages through its
//      own page table, computes, and writes y back through it; the pages stay
//      on the device throughout;
//   4. the CPU reads y (its pages come home on the first touch) and x (after
//      a prefetch to the host: no fault at all), and checks every element.
//
//   vector_on_device [elements] [UHMM_CONF-style config]
// Exits 0 when every element is right, 1 on any mismatch or error, 77 when
// this machine has no userfaultfd (nothing to show).
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <uhmm/allocator.hpp>
#include <uhmm/runtime.hpp>
#include <uhmm/soft_device.hpp>

namespace {

constexpr std::size_t kPage = 4096;

using FloatVector = std::vector<float, uhmm::allocator<float>>;

// The whole pages holding [p, p + bytes): the device works in pages.
struct Pages {
    std::byte* start;
    std::size_t len;
};
Pages pages_of(const void* p, std::size_t bytes) {
    const auto a = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t s = a & ~(kPage - 1), e = (a + bytes + kPage - 1) & ~(kPage - 1);
    return {reinterpret_cast<std::byte*>(s), e - s};
}

std::size_t count(const std::vector<uhmm::PageState>& v, uhmm::PageState s) {
    std::size_t n = 0;
    for (auto x : v) n += x == s;
    return n;
}

std::vector<uhmm::PageState> residency(const uhmm::Runtime& rt, Pages p) {
    std::vector<uhmm::PageState> out(p.len / kPage);
    if (auto ec = rt.residency(p.start, p.len, out)) std::fprintf(stderr, "residency: %s\n", ec.message().c_str());
    return out;
}

float x_at(std::size_t i) { return static_cast<float>(i % 1000) * 0.5f; }
float y_at(std::size_t i) { return static_cast<float>(i % 7); }

}  // namespace

int main(int argc, char** argv) {
    const std::size_t n = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : (4u << 20);   // 16 MiB per vector
    const char* conf = argc > 2 ? argv[2] : std::getenv("UHMM_CONF");
    std::string why;
    auto config = uhmm::RuntimeConfig::parse(conf ? conf : "arena=memfd", &why);
    if (!config) {
        std::fprintf(stderr, "vector_on_device: %s\n", why.c_str());
        return 1;
    }
    // Room on the device for both vectors.
    config->arena.size = std::max(config->arena.size, 2 * n * sizeof(float) + (64u << 20));
    config->socket = false;
    auto made = uhmm::Runtime::create(*config, &why);
    if (!made) {
        std::fprintf(stderr, "vector_on_device: %s\n", why.c_str());
        const auto e = made.error();
        return e == std::errc::operation_not_permitted || e == std::errc::function_not_supported ? 77 : 1;
    }
    uhmm::Runtime& rt = **made;
    int status = 0;
    {
        // 1. Filled on the CPU, in managed memory.
        uhmm::allocator<float> alloc(rt);
        FloatVector x(n, 0.0f, alloc), y(n, 0.0f, alloc);
        for (std::size_t i = 0; i < n; ++i) {
            x[i] = x_at(i);
            y[i] = y_at(i);
        }
        const Pages xp = pages_of(x.data(), n * sizeof(float)), yp = pages_of(y.data(), n * sizeof(float));

        // 2. To the device, for this device. Both vectors may share a page
        //    at their edges: one device over the span that holds them both.
        std::byte* lo = std::min(xp.start, yp.start);
        std::byte* hi = std::max(xp.start + xp.len, yp.start + yp.len);
        auto dev_made = uhmm::mirror::SoftDevice::create(rt, lo, static_cast<std::size_t>(hi - lo));
        if (!dev_made) {
            std::fprintf(stderr, "vector_on_device: SoftDevice: %s\n", dev_made.error().message().c_str());
            return 1;
        }
        auto& dev = **dev_made;
        for (const Pages& p : {xp, yp}) {
            auto r = rt.prefetch(p.start, p.len, uhmm::Target::device, &dev);
            if (!r || r->failed) {
                std::fprintf(stderr, "vector_on_device: prefetch to the device: %s\n",
                             r ? r->error.message().c_str() : r.error().message().c_str());
                return 1;
            }
        }
        const std::size_t on_device = count(residency(rt, xp), uhmm::PageState::device) +
                                      count(residency(rt, yp), uhmm::PageState::device);

        // 3. The kernel, a page of y at a time: read x's and y's bytes
        //    through the device, y = a*x + y, write y's page back.
        constexpr float a = 2.0f;
        std::vector<std::byte> xbuf(xp.len), ybuf(kPage);
        std::size_t device_faults = 0;
        auto rx = dev.read(xp.start, xp.len, xbuf.data());
        if (!rx) {
            std::fprintf(stderr, "vector_on_device: device read of x: %s\n", rx.error().message().c_str());
            return 1;
        }
        device_faults += rx->faults;
        const auto x_off = reinterpret_cast<std::uintptr_t>(x.data()) - reinterpret_cast<std::uintptr_t>(xp.start);
        const auto y0 = reinterpret_cast<std::uintptr_t>(y.data());
        for (std::size_t pg = 0; pg < yp.len / kPage; ++pg) {
            std::byte* page = yp.start + pg * kPage;
            auto r = dev.read(page, kPage, ybuf.data());
            if (!r) {
                std::fprintf(stderr, "vector_on_device: device read of y: %s\n", r.error().message().c_str());
                return 1;
            }
            device_faults += r->faults;
            // The elements of y on this page (the page may hold other bytes too).
            const std::uintptr_t from = std::max(reinterpret_cast<std::uintptr_t>(page), y0);
            const std::uintptr_t to = std::min(reinterpret_cast<std::uintptr_t>(page) + kPage, y0 + n * sizeof(float));
            for (std::uintptr_t at = from; at < to; at += sizeof(float)) {
                const std::size_t i = (at - y0) / sizeof(float);
                float xv, yv;
                std::memcpy(&xv, xbuf.data() + x_off + i * sizeof(float), sizeof xv);
                std::memcpy(&yv, ybuf.data() + (at - reinterpret_cast<std::uintptr_t>(page)), sizeof yv);
                yv = a * xv + yv;
                std::memcpy(ybuf.data() + (at - reinterpret_cast<std::uintptr_t>(page)), &yv, sizeof yv);
            }
            auto w = dev.write(page, kPage, ybuf.data());
            if (!w) {
                std::fprintf(stderr, "vector_on_device: device write of y: %s\n", w.error().message().c_str());
                return 1;
            }
            device_faults += w->faults;
        }
        const std::size_t still_on_device = count(residency(rt, xp), uhmm::PageState::device) +
                                            count(residency(rt, yp), uhmm::PageState::device);

        // 4. The CPU: y straight away (pages come home on fault), x after a
        //    prefetch home (no fault).
        const auto before = rt.stats();
        std::size_t bad = 0;
        for (std::size_t i = 0; i < n; ++i)
            if (y[i] != a * x_at(i) + y_at(i)) ++bad;
        const auto after_y = rt.stats();
        auto home = rt.prefetch(x.data(), n * sizeof(float), uhmm::Target::host);
        if (!home) {
            std::fprintf(stderr, "vector_on_device: prefetch home: %s\n", home.error().message().c_str());
            return 1;
        }
        const auto after_prefetch = rt.stats();
        for (std::size_t i = 0; i < n; ++i)
            if (x[i] != x_at(i)) ++bad;
        const auto after_x = rt.stats();

        std::printf("vector_on_device: %zu floats per vector, %zu pages on the device after prefetch, %zu still "
                    "there after the kernel (device faults: %zu)\n",
                    n, on_device, still_on_device, device_faults);
        std::printf("  CPU pass over y: %llu faults, %llu pages came home; prefetch of x home: %zu pages; CPU pass "
                    "over x: %llu faults\n",
                    static_cast<unsigned long long>(after_y.faults - before.faults),
                    static_cast<unsigned long long>(after_y.pages_to_host_on_fault - before.pages_to_host_on_fault),
                    home->migrated, static_cast<unsigned long long>(after_x.faults - after_prefetch.faults));
        std::printf("  %s: %zu wrong elements\n", bad ? "MISMATCH" : "ok", bad);
        const bool stayed = still_on_device == on_device && on_device == (xp.len + yp.len) / kPage;
        if (!stayed) std::printf("  MISMATCH: pages left the device while the device used them\n");
        if (after_x.faults != after_prefetch.faults) std::printf("  MISMATCH: the CPU faulted after prefetch home\n");
        if (bad || !stayed || after_x.faults != after_prefetch.faults) status = 1;
    }
    return status;
}
