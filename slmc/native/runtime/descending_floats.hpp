// The values of a float row in descending order (no indices), by an LSD radix sort of order-preserving
// 32-bit keys: three passes of 11-bit digits, O(n), into caller-owned buffers (nothing allocated once they
// have grown). Nucleus sampling needs the probabilities summed in descending order (sampler.cpp); a
// comparison sort of the indices cost 4.75 ms per SmolLM token (49,152 entries, CPU time; dev-notes
// session 12). Precondition: no NaN in the row (the caller checks); -0.0 sorts just below +0.0 (they
// compare equal, so any consumer comparing values sees one tie group).
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace slmc {

namespace descending_detail {

// Larger float -> larger key: flip every bit of a negative number, only the sign bit of a positive one.
inline uint32_t key_of(float v) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

inline float float_of(uint32_t key) {
    uint32_t bits = (key & 0x80000000u) ? (key & 0x7FFFFFFFu) : ~key;
    float v;
    std::memcpy(&v, &bits, sizeof v);
    return v;
}

}  // namespace descending_detail

// `values[0..n)` = x[0..n) sorted descending; `out` and `scratch` are the radix sort's key buffers.
inline void sort_descending(const float* x, int64_t n, std::vector<float>& values, std::vector<uint32_t>& out,
                            std::vector<uint32_t>& scratch) {
    using namespace descending_detail;
    constexpr int kBits = 11, kBins = 1 << kBits, kPasses = 3;  // 33 bits >= 32
    size_t size = static_cast<size_t>(n);
    out.resize(size);
    scratch.resize(size);
    uint32_t count[kPasses][kBins] = {};
    for (size_t i = 0; i < size; ++i) {
        uint32_t k = ~key_of(x[i]);  // ascending order of ~key = descending order of the value
        out[i] = k;
        for (int pass = 0; pass < kPasses; ++pass) ++count[pass][(k >> (pass * kBits)) & (kBins - 1)];
    }
    uint32_t* from = out.data();
    uint32_t* to = scratch.data();
    for (int pass = 0; pass < kPasses; ++pass) {
        uint32_t start = 0;
        for (int b = 0; b < kBins; ++b) {
            uint32_t c = count[pass][b];
            count[pass][b] = start;
            start += c;
        }
        int shift = pass * kBits;
        for (size_t i = 0; i < size; ++i) to[count[pass][(from[i] >> shift) & (kBins - 1)]++] = from[i];
        std::swap(from, to);
    }
    values.resize(size);
    for (size_t i = 0; i < size; ++i) values[i] = float_of(~from[i]);
}

}  // namespace slmc
