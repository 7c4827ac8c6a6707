// HF's order of logits processors: repetition penalty, temperature, top-k, top-p; then a draw from
// the softmax of what is left (in double precision).
#include "sampler.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>

#include "../src/errors.hpp"
#include "argmax.hpp"
#include "descending_floats.hpp"

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

namespace {

// Buffers grown on the first token and reused after (nothing allocated per token in steady state); one set
// per decoding thread.
struct Scratch {
    std::vector<float> penalized;     // the logits after the repetition penalty (float32, as HF)
    std::vector<uint8_t> done;        // ids already penalized
    std::vector<double> scaled;       // top-k: logits / temperature
    std::vector<int32_t> order;       // top-k: ids by descending logit, ties by id
    std::vector<float> sorted;        // nucleus: the logits in descending order (values only)
    std::vector<uint32_t> keys, keys_scratch;
    std::vector<double> p;            // unnormalized probabilities, in descending order
};

Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

// The position drawn from unnormalized probabilities p(0) >= p(1) >= ... of which the first `keep` are
// candidates and `total` is their sum in that order: top-p keeps the smallest prefix whose cumulative
// p / total reaches top_p (re-summed), then a walk subtracts p(i) from u * total until it turns negative.
template <class P>
size_t draw_position(P&& p, size_t keep, double total, float top_p, SplitMix64& rng) {
    if (top_p < 1.0f) {  // the smallest prefix (by probability) whose mass reaches top_p
        double cumulative = 0;
        size_t n = 0;
        while (n < keep) {
            cumulative += p(n++) / total;
            if (cumulative >= top_p) break;
        }
        keep = n;
        total = 0;
        for (size_t i = 0; i < keep; ++i) total += p(i);
    }
    double target = rng.uniform() * total;
    for (size_t i = 0; i < keep; ++i) {
        target -= p(i);
        if (target < 0) return i;
    }
    return keep - 1;
}

// The largest logit of a row to sample from. Sampling has no rule for a NaN logit (greedy's is the first NaN):
// ModelError naming the token, before the top-k partial_sort or the radix sort sees it (either would be
// undefined / wrong with a NaN).
float checked_max(const float* f, int64_t vocab) {
    float best = -std::numeric_limits<float>::infinity();
    for (int64_t i = 0; i < vocab; ++i) {
        if (std::isnan(f[i]))
            throw ModelError("sampling: the model's logit of token " + std::to_string(i) +
                             " is NaN (greedy decoding chooses the first NaN; sampling has no such rule)");
        best = f[i] > best ? f[i] : best;
    }
    return best;
}

// HF's order with top_k in (0, vocab): partial_sort of the ids, then as sample_nucleus on the first top_k.
int32_t sample_top_k(const float* f, int64_t vocab, const Sampling& s, SplitMix64& rng, Scratch& b) {
    std::vector<double>& l = b.scaled;
    l.assign(f, f + vocab);
    for (double& v : l) v /= s.temperature;
    std::vector<int32_t>& order = b.order;
    order.resize(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    auto higher = [&](int32_t a, int32_t c) { return l[a] > l[c] || (l[a] == l[c] && a < c); };
    size_t keep = static_cast<size_t>(s.top_k);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), higher);
    double max = l[order[0]];
    std::vector<double>& p = b.p;
    p.resize(keep);
    double total = 0;
    for (size_t i = 0; i < keep; ++i) total += p[i] = std::exp(l[order[i]] - max);
    return order[draw_position([&](size_t i) { return p[i]; }, keep, total, s.top_p, rng)];
}

// Temperature + top-p over the whole vocabulary, without sorting the ids.
//
// Exactness against the former implementation (std::sort of all ids by (logit / T descending, id
// ascending), p_i = exp(l_i - max) in that order, total = their sum in that order, the prefix whose
// cumulative p_i / total first reaches top_p, its sum, and a walk subtracting p_i from u * total):
// every number that implementation computed depends on the ids only through the sequence of their logits
// in descending order, and that sequence is the sorted multiset of logit values, whatever breaks the ties.
// x -> double(x) / T is strictly increasing on float32 values (a quotient of doubles rounds by 2^-53
// relative, distinct floats differ by >= 2^-24) and keeps equal floats equal, so sorting the float values
// (an O(n) radix sort, descending_floats.hpp) gives the same sequence, and p_j = exp(double(v_j) / T - max)
// the same doubles, summed in the same order. The walk ends at a position j; the id at position j of the
// old order is the r-th id (in id order) whose logit equals v_j, r = j minus the first position holding
// v_j: one scan of the row. The one shortcut: the total stops adding once p_j < ulp(total) / 2, since
// round-to-nearest then leaves total unchanged, and every later p is <= p_j (the later p_j are still
// computed when a walk reaches them); tested as p_j < total * 2^-54, which implies it (ulp(x) > x * 2^-53
// for x > 0; also for subnormal x; an infinite total stays infinite). NaN compares false, so a NaN total
// never stops early.
int32_t sample_nucleus(const float* f, int64_t vocab, const Sampling& s, SplitMix64& rng, Scratch& b) {
    sort_descending(f, vocab, b.sorted, b.keys, b.keys_scratch);
    const std::vector<float>& v = b.sorted;
    const double temperature = s.temperature;
    const size_t size = static_cast<size_t>(vocab);
    const double max = static_cast<double>(v[0]) / temperature;
    std::vector<double>& p = b.p;
    p.resize(size);
    size_t computed = 0;
    auto at = [&](size_t j) {
        for (; computed <= j; ++computed) p[computed] = std::exp(static_cast<double>(v[computed]) / temperature - max);
        return p[j];
    };
    double total = 0;
    for (size_t j = 0; j < size; ++j) {
        double q = at(j);
        if (q < total * 0x1p-54) break;  // < ulp(total) / 2: total + q rounds to total, as all later q
        total += q;
    }
    size_t position = draw_position(at, size, total, s.top_p, rng);
    float chosen = v[position];
    size_t first = position;
    while (first > 0 && v[first - 1] == chosen) --first;
    size_t rank = position - first;
    for (int64_t i = 0; i < vocab; ++i)
        if (f[i] == chosen && rank-- == 0) return static_cast<int32_t>(i);
    throw std::logic_error("sample_nucleus: the chosen logit is not in the row");  // unreachable
}

}  // namespace

int32_t sample_token(const float* logits, int64_t vocab, const Sampling& s, const std::vector<int32_t>& seen,
                     SplitMix64& rng) {
    bool greedy = s.temperature == 0.0f;
    if (greedy && s.repetition_penalty == 1.0f) return static_cast<int32_t>(first_argmax(logits, vocab));  // in place
    Scratch& b = scratch();
    const float* f = logits;
    if (s.repetition_penalty != 1.0f) {
        b.penalized.assign(logits, logits + vocab);
        b.done.assign(static_cast<size_t>(vocab), 0);
        for (int32_t id : seen) {
            if (id < 0 || id >= vocab || b.done[id]) continue;
            b.done[id] = 1;
            float v = logits[id];  // HF: gather, then divide positive / multiply negative scores, in float32
            b.penalized[id] = v > 0 ? v / s.repetition_penalty : v * s.repetition_penalty;
        }
        f = b.penalized.data();
    }
    if (greedy) return static_cast<int32_t>(first_argmax(f, vocab));
    // An infinite maximum (a +inf logit, or every logit -inf) makes exp(l - max) inf - inf = NaN: the token is
    // then greedy's, the first maximum, for every temperature / top-k / top-p (the Python sampler's rule too,
    // slmc/artifact/sampling.py). The former arithmetic drew the last kept position there.
    if (std::isinf(checked_max(f, vocab))) return static_cast<int32_t>(first_argmax(f, vocab));
    if (s.top_k > 0 && s.top_k < vocab) return sample_top_k(f, vocab, s, rng, b);
    return sample_nucleus(f, vocab, s, rng, b);
}

}  // namespace slmc
