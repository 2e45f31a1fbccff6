// read_vmas(): /proc/self/maps, the lines that overlap the interval.
#include "mirror/vma_view.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace uhmm::mirror::detail {

std::error_code read_vmas(std::uintptr_t start, std::uintptr_t end, std::vector<Vma>& out) {
    out.clear();
    std::FILE* f = std::fopen("/proc/self/maps", "re");
    if (!f) return {errno, std::generic_category()};
    char line[4096];
    while (std::fgets(line, sizeof line, f)) {
        unsigned long a = 0, b = 0;
        char perms[8] = {};
        int path_at = 0;
        if (std::sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &a, &b, perms, &path_at) < 3) continue;
        if (b <= start) continue;
        if (a >= end) break;
        Vma v;
        v.start = a;
        v.end = b;
        v.read = perms[0] == 'r';
        v.write = perms[1] == 'w';
        v.shared = perms[3] == 's';
        const char* path = path_at > 0 ? line + path_at : "";
        v.special = std::strncmp(path, "[vvar", 5) == 0 || std::strncmp(path, "[vsyscall]", 10) == 0 ||
                    std::strncmp(path, "[vdso]", 6) == 0;
        out.push_back(v);
    }
    std::fclose(f);
    return {};
}

}  // namespace uhmm::mirror::detail
