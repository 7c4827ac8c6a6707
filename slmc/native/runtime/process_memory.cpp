// /proc/self/smaps: a header line per mapping ("start-end perms offset dev inode [path]") followed by
// "Key: value kB" lines, of which Rss is summed per kind.
#include "process_memory.hpp"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

namespace slmc {
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string base_name(const std::string& path) {
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? path : path.substr(slash + 1);
}

// "Key:   123 kB" -> 123 * 1024 when the line starts with `key`, else -1.
int64_t kilobytes_field(const std::string& line, const char* key) {
    size_t n = std::strlen(key);
    if (line.compare(0, n, key) != 0) return -1;
    return std::strtoll(line.c_str() + n, nullptr, 10) * 1024;
}

uint64_t* bucket(ResidentMemory& m, uintptr_t start, uintptr_t end, const std::string& path, const std::string& weights_name,
                 const std::vector<const void*>& kv) {
    for (const void* p : kv) {
        auto a = reinterpret_cast<uintptr_t>(p);
        if (p && start <= a && a < end) return &m.kv_cache;
    }
    if (path.empty() || path[0] != '/') return &m.anonymous;  // also [heap], [stack], [anon:...], [vdso]
    std::string name = base_name(path);
    if (ends_with(path, "/" + weights_name)) return &m.weights;
    if (name == "model.so") return &m.model_library;
    if (name.compare(0, 6, "libtvm") == 0) return &m.tvm_libraries;
    return &m.other_files;
}

}  // namespace

ResidentMemory resident_memory(const std::string& weights_file_name, const std::vector<const void*>& kv_cache_data) {
    ResidentMemory m;
    std::ifstream smaps("/proc/self/smaps");
    if (!smaps) return m;
    uint64_t* current = nullptr;
    std::string line;
    while (std::getline(smaps, line)) {
        unsigned long long start = 0, end = 0;
        int consumed = 0;
        if (std::sscanf(line.c_str(), "%llx-%llx %*s %*s %*s %*s%n", &start, &end, &consumed) == 2 && consumed > 0) {
            size_t at = line.find_first_not_of(' ', static_cast<size_t>(consumed));
            std::string path = at == std::string::npos ? "" : line.substr(at);
            current = bucket(m, static_cast<uintptr_t>(start), static_cast<uintptr_t>(end), path, weights_file_name, kv_cache_data);
            continue;
        }
        int64_t rss = kilobytes_field(line, "Rss:");
        if (rss >= 0 && current) {
            *current += static_cast<uint64_t>(rss);
            m.total += static_cast<uint64_t>(rss);
        }
    }
    m.available = true;
    std::ifstream status("/proc/self/status");
    while (std::getline(status, line)) {
        int64_t hwm = kilobytes_field(line, "VmHWM:");
        if (hwm >= 0) m.peak = static_cast<uint64_t>(hwm);
    }
    return m;
}

}  // namespace slmc
