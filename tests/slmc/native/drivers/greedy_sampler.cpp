// Test driver for slmc/native/runtime/sampler.cpp (tests/slmc/native/test_sampler.py): reads rows of logits
// from stdin (each an int64 length, then that many float32 values) and prints per row the greedy token
// without a repetition penalty (the in-place path), the greedy token with a penalty that touches no id
// (the path through a float copy), and the operator-new calls the in-place path made.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <vector>

#include "counting_new.hpp"
#include "sampler.hpp"

int main() {
    slmc::SplitMix64 rng(0);
    slmc::Sampling greedy, penalized;
    penalized.repetition_penalty = 1.5f;
    const std::vector<int32_t> none;
    int64_t n = 0;
    while (std::fread(&n, sizeof n, 1, stdin) == 1) {
        std::vector<float> row(static_cast<size_t>(n));
        if (std::fread(row.data(), sizeof(float), row.size(), stdin) != row.size()) return 2;
        long before = allocations;
        int32_t in_place = slmc::sample_token(row.data(), n, greedy, none, rng);
        long made = allocations - before;
        int32_t copied = slmc::sample_token(row.data(), n, penalized, none, rng);
        std::printf("%d %d %ld\n", in_place, copied, made);
    }
    return 0;
}
