#include "read_file.hpp"

#include <cstdio>
#include <memory>

#include "errors.hpp"

#ifdef SLMC_WITH_ZLIB
#include <zlib.h>
#endif

namespace slmc {

bool gzip_supported() {
#ifdef SLMC_WITH_ZLIB
    return true;
#else
    return false;
#endif
}

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

std::string read_file(const std::string& path) {
    if (ends_with(path, ".gz")) {
#ifdef SLMC_WITH_ZLIB
        gzFile f = gzopen(path.c_str(), "rb");
        if (!f) throw IoError(path + ": cannot open (missing or unreadable)");
        std::string out;
        char buf[1 << 16];
        int n;
        while ((n = gzread(f, buf, sizeof buf)) > 0) out.append(buf, size_t(n));
        int err = 0;
        const char* msg = n < 0 ? gzerror(f, &err) : nullptr;
        std::string what = msg ? msg : "";
        gzclose(f);
        if (n < 0) throw FormatError(path + ": not a readable gzip file (" + what + ")");
        return out;
#else
        throw IoError(path + ": this build of slmc's native runtime has no zlib; give the uncompressed tokenizer.json");
#endif
    }
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
    if (!f) throw IoError(path + ": cannot open (missing or unreadable)");
    std::string out;
    char buf[1 << 16];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof buf, f.get())) > 0) out.append(buf, n);
    if (std::ferror(f.get())) throw IoError(path + ": read error");
    return out;
}

}  // namespace slmc
