// Greedy decoding's choice: the index of the first maximum of a row of logits, as numpy's argmax (a NaN
// counts as the maximum: the first NaN wins), read in place.
//
// Why not std::max_element: it carries the *position* of the best element from one comparison to the next
// and reloads the value through it, so every element waits for a load, a compare and a cmov of the one
// before (a dependency chain of ~13 cycles per element on this Zen 5 machine with GCC 12 -O2): 151 us over
// SmolLM-135M's 49,152 logits, 6% of a 2.5 ms decode step, and the bulk of slmc-run's decode gap to the
// Python runtime (np.argmax: 2.8 us; docs/dev-notes.md, session 12). Here the row is read in blocks of
// kBlock, each by kLanes independent running maxima (no chain across lanes; GCC vectorizes the lane loop),
// which keeps the block of the first maximum; the first equal element in that block is the answer. A
// per-lane running sum is the finiteness probe: a NaN or an infinity makes it non-finite, and such rows
// take the plain scan with numpy's rule (so does a row of finite values whose sum overflows: slower, still
// exact). Measured 10.4 us per float row against 155 us (CPU time, loaded machine).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace slmc {

namespace argmax_detail {

constexpr int kLanes = 16;
constexpr int64_t kBlock = 1024;

// The largest of x[0..n) (NaNs skipped; -inf when there is no number), and every element added to `probe`.
template <class T>
T block_max(const T* x, int64_t n, T& probe) {
    T best[kLanes], sum[kLanes];
    for (int j = 0; j < kLanes; ++j) {
        best[j] = -std::numeric_limits<T>::infinity();
        sum[j] = 0;
    }
    int64_t whole = n - n % kLanes;
    for (int64_t i = 0; i < whole; i += kLanes)
        for (int j = 0; j < kLanes; ++j) {
            T v = x[i + j];
            best[j] = v > best[j] ? v : best[j];
            sum[j] += v;
        }
    T top = -std::numeric_limits<T>::infinity();
    for (int j = 0; j < kLanes; ++j) {
        top = best[j] > top ? best[j] : top;
        probe += sum[j];
    }
    for (int64_t i = whole; i < n; ++i) {
        top = x[i] > top ? x[i] : top;
        probe += x[i];
    }
    return top;
}

// numpy's rule element by element: the first NaN, else the first maximum (infinities compare as numbers).
template <class T>
int64_t scan(const T* x, int64_t n) {
    int64_t at = 0;
    T best = x[0];
    for (int64_t i = 0; i < n; ++i) {
        if (std::isnan(x[i])) return i;
        if (x[i] > best) {
            best = x[i];
            at = i;
        }
    }
    return at;
}

}  // namespace argmax_detail

// The index of the first maximum of x[0..n), numpy's argmax. Precondition: n >= 1.
template <class T>
int64_t first_argmax(const T* x, int64_t n) {
    using namespace argmax_detail;
    T top = -std::numeric_limits<T>::infinity(), probe = 0;
    int64_t top_block = 0;
    for (int64_t start = 0; start < n; start += kBlock) {
        T block = block_max(x + start, std::min(kBlock, n - start), probe);
        if (block > top) {  // strictly: the first block holding the maximum is kept
            top = block;
            top_block = start;
        }
    }
    if (!std::isfinite(probe)) return scan(x, n);  // a NaN or an infinity in the row
    for (int64_t i = top_block; i < n; ++i)
        if (x[i] == top) return i;
    return top_block;  // not reached: `top` is an element of the block at top_block
}

}  // namespace slmc
