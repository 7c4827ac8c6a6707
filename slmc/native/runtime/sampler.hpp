// Choosing the next token from logits: greedy, temperature, top-k, top-p, repetition penalty, with
// a seeded splitmix64 generator (the definitions are in include/slmc_runtime.h).
#pragma once

#include <cstdint>
#include <vector>

namespace slmc {

// splitmix64 (Steele, Lea, Flood 2014): state += 0x9E3779B97F4A7C15; z = state;
// z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB; out = z ^ z>>31.
class SplitMix64 {
  public:
    explicit SplitMix64(uint64_t seed) : state_(seed) {}
    uint64_t next();
    double uniform();  // [0, 1): the top 53 bits of next() times 2^-53

  private:
    uint64_t state_;
};

struct Sampling {
    float temperature = 0;          // 0: greedy
    int32_t top_k = 0;              // 0: off
    float top_p = 1;                // 1: off
    float repetition_penalty = 1;   // 1: off
};

// Throws std::invalid_argument naming the parameter when out of range.
void check_sampling(const Sampling& s);

// The next token of `logits[0..vocab)`. `seen` are the ids in the context (prompt and generated
// tokens) the repetition penalty applies to. Greedy: the first maximum (numpy's argmax, first_argmax in
// argmax.hpp), read from `logits` in place when there is no repetition penalty (nothing copied or allocated).
// Sampling (temperature > 0): HF's order (penalty, temperature, top-k, top-p), ties broken by the lower id;
// without top-k the logit values are radix-sorted instead of the ids (the same token as a full sort of the
// ids for every seed; the argument is at sample_nucleus in sampler.cpp). Buffers are reused per thread: no
// allocation per token once grown. A NaN logit under sampling throws ModelError (SLMC_E_MODEL) naming the token
// (greedy's rule, the first NaN wins, has no sampling counterpart; the former std::sort was undefined there).
// An infinite maximum after the penalty (a +inf logit, or every logit -inf) has no softmax (inf - inf): sampling
// then returns greedy's first maximum (the first +inf; id 0 when all are -inf), as slmc/artifact/sampling.py.
int32_t sample_token(const float* logits, int64_t vocab, const Sampling& s, const std::vector<int32_t>& seen,
                     SplitMix64& rng);

}  // namespace slmc
