// HF's order of logits processors: repetition penalty, temperature, top-k, top-p; then a draw from
// the softmax of what is left (in double precision).
#include "sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "argmax.hpp"

namespace slmc {

uint64_t SplitMix64::next() {
    state_ += 0x9E3779B97F4A7C15ull;
    uint64_t z = state_;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

double SplitMix64::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

void check_sampling(const Sampling& s) {
    if (!(s.temperature >= 0) || !std::isfinite(s.temperature))
        throw std::invalid_argument("temperature must be a finite number >= 0 (0: greedy), got " + std::to_string(s.temperature));
    if (s.top_k < 0) throw std::invalid_argument("top_k must be >= 0 (0: off), got " + std::to_string(s.top_k));
    if (!(s.top_p > 0 && s.top_p <= 1)) throw std::invalid_argument("top_p must lie in (0, 1] (1: off), got " + std::to_string(s.top_p));
    if (!(s.repetition_penalty > 0) || !std::isfinite(s.repetition_penalty))
        throw std::invalid_argument("repetition_penalty must be a finite number > 0 (1: off), got " + std::to_string(s.repetition_penalty));
}

int32_t sample_token(const float* logits, int64_t vocab, const Sampling& s, const std::vector<int32_t>& seen,
                     SplitMix64& rng) {
    bool greedy = s.temperature == 0.0f;
    if (greedy && s.repetition_penalty == 1.0f) return static_cast<int32_t>(first_argmax(logits, vocab));  // in place
    std::vector<double> l(logits, logits + vocab);
    if (s.repetition_penalty != 1.0f) {
        std::vector<bool> done(static_cast<size_t>(vocab), false);
        for (int32_t id : seen) {
            if (id < 0 || id >= vocab || done[id]) continue;
            done[id] = true;
            float v = logits[id];  // HF: gather, then divide positive / multiply negative scores, in float32
            l[id] = v > 0 ? v / s.repetition_penalty : v * s.repetition_penalty;
        }
    }
    if (greedy) return static_cast<int32_t>(first_argmax(l.data(), vocab));
    for (double& v : l) v /= s.temperature;
    std::vector<int32_t> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    auto higher = [&](int32_t a, int32_t b) { return l[a] > l[b] || (l[a] == l[b] && a < b); };
    size_t keep = order.size();
    if (s.top_k > 0 && static_cast<size_t>(s.top_k) < keep) {
        keep = static_cast<size_t>(s.top_k);
        std::partial_sort(order.begin(), order.begin() + keep, order.end(), higher);
    } else {
        std::sort(order.begin(), order.end(), higher);
    }
    double max = l[order[0]];
    std::vector<double> p(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += p[i] = std::exp(l[order[i]] - max);
    if (s.top_p < 1.0f) {  // the smallest prefix (by probability) whose mass reaches top_p
        double cumulative = 0;
        size_t n = 0;
        while (n < keep) {
            cumulative += p[n++] / total;
            if (cumulative >= s.top_p) break;
        }
        keep = n;
        total = std::accumulate(p.begin(), p.begin() + keep, 0.0);
    }
    double target = rng.uniform() * total;
    for (size_t i = 0; i < keep; ++i) {
        target -= p[i];
        if (target < 0) return order[i];
    }
    return order[keep - 1];
}

}  // namespace slmc
