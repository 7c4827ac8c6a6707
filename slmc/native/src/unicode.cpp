#include "unicode.hpp"

#include <algorithm>
#include <cstddef>

namespace slmc {
namespace {

struct CodeRange { char32_t lo, hi; };
struct CodeValue { char32_t cp; int value; };
struct Decomposition { char32_t cp, first, second; };
struct Composition { char32_t first, second, composite; };

#include "unicode_tables.inc"

template <size_t N>
bool in(const CodeRange (&table)[N], char32_t cp) {
    const CodeRange* end = table + N;
    const CodeRange* it = std::upper_bound(table, end, cp, [](char32_t v, const CodeRange& r) { return v < r.lo; });
    return it != table && cp <= (it - 1)->hi;
}

int combining_class(char32_t cp) {
    const CodeValue* end = kCombiningClass + sizeof(kCombiningClass) / sizeof(kCombiningClass[0]);
    const CodeValue* it = std::lower_bound(kCombiningClass, end, cp, [](const CodeValue& v, char32_t c) { return v.cp < c; });
    return it != end && it->cp == cp ? it->value : 0;
}

const Decomposition* decomposition(char32_t cp) {
    const Decomposition* end = kDecomposition + sizeof(kDecomposition) / sizeof(kDecomposition[0]);
    const Decomposition* it = std::lower_bound(kDecomposition, end, cp, [](const Decomposition& d, char32_t c) { return d.cp < c; });
    return it != end && it->cp == cp ? it : nullptr;
}

constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr int kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

void decompose_into(char32_t cp, std::u32string& out) {
    if (cp >= kSBase && cp < kSBase + kSCount) {
        int s = int(cp - kSBase);
        out.push_back(kLBase + s / kNCount);
        out.push_back(kVBase + (s % kNCount) / kTCount);
        if (s % kTCount) out.push_back(kTBase + s % kTCount);
        return;
    }
    const Decomposition* d = decomposition(cp);
    if (!d) { out.push_back(cp); return; }
    decompose_into(d->first, out);
    if (d->second) decompose_into(d->second, out);
}

char32_t compose_pair(char32_t a, char32_t b) {
    if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount)
        return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
    if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase && b < kTBase + kTCount)
        return a + (b - kTBase);
    const Composition* end = kComposition + sizeof(kComposition) / sizeof(kComposition[0]);
    const Composition* it = std::lower_bound(kComposition, end, std::make_pair(a, b), [](const Composition& c, std::pair<char32_t, char32_t> k) {
        return c.first < k.first || (c.first == k.first && c.second < k.second);
    });
    return it != end && it->first == a && it->second == b ? it->composite : 0;
}

}  // namespace

bool is_letter(char32_t cp) { return in(kLetter, cp); }
bool is_number(char32_t cp) { return in(kNumber, cp); }
bool is_white_space(char32_t cp) { return in(kWhiteSpace, cp); }
bool is_word(char32_t cp) {
    return in(kLetter, cp) || in(kMark, cp) || in(kDecimal, cp) || in(kConnector, cp) || cp == 0x200C || cp == 0x200D;
}
const char* unicode_version() { return SLMC_UNICODE_VERSION; }

std::u32string nfd(const std::u32string& text) {
    std::u32string out;
    out.reserve(text.size());
    for (char32_t cp : text) decompose_into(cp, out);
    // Canonical ordering: stable sort of each run of non-starters by combining class.
    for (size_t i = 0; i < out.size();) {
        if (combining_class(out[i]) == 0) { ++i; continue; }
        size_t j = i;
        while (j < out.size() && combining_class(out[j]) != 0) ++j;
        std::stable_sort(out.begin() + i, out.begin() + j, [](char32_t a, char32_t b) { return combining_class(a) < combining_class(b); });
        i = j;
    }
    return out;
}

std::u32string nfc(const std::u32string& text) {
    std::u32string d = nfd(text);
    std::u32string out;
    out.reserve(d.size());
    long starter = -1;
    for (char32_t ch : d) {
        int cc = combining_class(ch);
        if (starter >= 0) {
            bool adjacent = out.size() - 1 == size_t(starter);
            int last_cc = combining_class(out.back());
            if (adjacent || (last_cc != 0 && last_cc < cc)) {
                char32_t composite = compose_pair(out[size_t(starter)], ch);
                if (composite) { out[size_t(starter)] = composite; continue; }
            }
        }
        if (cc == 0) starter = long(out.size());
        out.push_back(ch);
    }
    return out;
}

}  // namespace slmc
