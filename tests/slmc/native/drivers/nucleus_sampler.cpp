// Test driver for slmc/native/runtime/sampler.cpp's temperature / top-k / top-p sampling
// (tests/slmc/native/test_nucleus_sampler.py). Keeps the former implementation (a std::sort of every id,
// session 11) as the reference. Reads cases from stdin: int64 n, float temperature, int32 top_k, float
// top_p, float repetition_penalty, uint64 seed, int32 draws, then n float32 logits. Prints per case one
// line: the `draws` tokens of sample_token, "|", the reference's tokens with the same seed, "|", the
// operator-new calls of sample_token after its first draw (steady state). With `--time N` it instead prints
// the per-token CPU time (us) of both on each case, over N calls.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <numeric>
#include <vector>

#include "counting_new.hpp"
#include "sampler.hpp"

// The session 11 sample_token for temperature > 0, verbatim but for the greedy branch.
static int32_t reference_sample(const float* logits, int64_t vocab, const slmc::Sampling& s,
                                const std::vector<int32_t>& seen, slmc::SplitMix64& rng) {
    std::vector<double> l(logits, logits + vocab);
    if (s.repetition_penalty != 1.0f) {
        std::vector<bool> done(static_cast<size_t>(vocab), false);
        for (int32_t id : seen) {
            if (id < 0 || id >= vocab || done[id]) continue;
            done[id] = true;
            float v = logits[id];
            l[id] = v > 0 ? v / s.repetition_penalty : v * s.repetition_penalty;
        }
    }
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
    if (s.top_p < 1.0f) {
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

static double cpu_us() {
    timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

int main(int argc, char** argv) {
    int timing = argc == 3 && std::strcmp(argv[1], "--time") == 0 ? std::atoi(argv[2]) : 0;
    int64_t n = 0;
    while (std::fread(&n, sizeof n, 1, stdin) == 1) {
        slmc::Sampling s;
        uint64_t seed = 0;
        int32_t draws = 0;
        if (std::fread(&s.temperature, 4, 1, stdin) != 1 || std::fread(&s.top_k, 4, 1, stdin) != 1 ||
            std::fread(&s.top_p, 4, 1, stdin) != 1 || std::fread(&s.repetition_penalty, 4, 1, stdin) != 1 ||
            std::fread(&seed, 8, 1, stdin) != 1 || std::fread(&draws, 4, 1, stdin) != 1)
            return 2;
        std::vector<float> row(static_cast<size_t>(n));
        if (std::fread(row.data(), sizeof(float), row.size(), stdin) != row.size()) return 2;
        std::vector<int32_t> seen;
        for (int32_t id = 0; id < n && id < 64; id += 3) seen.push_back(id);  // the penalty touches some ids
        slmc::SplitMix64 rng(seed), reference_rng(seed);
        if (timing) {
            double t0 = cpu_us();
            for (int i = 0; i < timing; ++i) slmc::sample_token(row.data(), n, s, seen, rng);
            double t1 = cpu_us();
            for (int i = 0; i < timing; ++i) reference_sample(row.data(), n, s, seen, reference_rng);
            double t2 = cpu_us();
            std::printf("%.1f %.1f\n", (t1 - t0) / timing, (t2 - t1) / timing);
            continue;
        }
        std::vector<int32_t> got, want;
        got.reserve(draws);
        want.reserve(draws);
        long steady = 0;
        for (int32_t i = 0; i < draws; ++i) {
            long before = allocations;
            got.push_back(slmc::sample_token(row.data(), n, s, seen, rng));
            if (i > 0) steady += allocations - before;
            want.push_back(reference_sample(row.data(), n, s, seen, reference_rng));
        }
        for (int32_t t : got) std::printf("%d ", t);
        std::printf("|");
        for (int32_t t : want) std::printf(" %d", t);
        std::printf(" | %ld\n", steady);
    }
    return 0;
}
