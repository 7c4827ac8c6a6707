// An opened artifact and its conversation state: the KV cache, the tokens in context and the
// last sampled token (not yet fed to the model).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../src/c_api_handles.hpp"
#include "manifest.hpp"
#include "mapped_file.hpp"
#include "sampler.hpp"
#include "tvm_model.hpp"

namespace slmc {

struct GenerationStats {
    int32_t prompt_tokens = 0;     // tokens of this call's prompt
    int32_t generated_tokens = 0;
    double ttft_seconds = 0;       // from the call to the first token (tokenize + prefill + sample)
    double prefill_seconds = 0;    // the prefill call of the model
    double decode_seconds = 0;     // the decode calls (one per token after the first) with sampling
    bool stopped_at_eos = false;
    bool stopped_at_context = false;
};

// What the memory bound of issue 18 is stated in (weights file + KV cache at the context used).
struct MemoryUse {
    uint64_t weights_file_bytes = 0;       // weights.safetensors, mapped (never copied)
    uint64_t kv_cache_bytes = 0;           // keys + values of the slots in use (cached tokens + the sink slot)
    uint64_t kv_cache_reserved_bytes = 0;  // resident contract: max_context + 1 slots of address space
    bool kv_cache_huge_pages = false;      // resident contract: huge pages asked for (kv_pages.hpp)
    std::vector<const void*> kv_cache_data;  // the keys' and values' data (to find their mappings)
};

// Returns false to stop generation.
using TokenSink = std::function<bool(int32_t id, const std::string& text)>;

class Session {
  public:
    // Opens `artifact_dir` (checks the manifest's sizes and sha256 of model.so, the weights and the
    // tokenizer; maps the weights). Throws IoError / FormatError / IntegrityError / ModelError /
    // UnsupportedError with the file or field named.
    explicit Session(const std::string& artifact_dir);

    // Encodes `prompt` without special tokens (as `slmc generate` does), prefills it after the
    // current context and decodes up to `max_new_tokens` (stopping at the tokenizer's eos token and
    // at the artifact's max_context). Throws std::invalid_argument for an empty prompt or one that
    // does not fit the context.
    GenerationStats generate(const std::string& prompt, const Sampling& sampling, uint64_t seed, int32_t max_new_tokens,
                             const TokenSink& sink);
    // The same from token ids (each in [0, vocab)); `start` is when the call began (for ttft).
    GenerationStats generate_ids(const std::vector<int32_t>& prompt_ids, const Sampling& sampling, uint64_t seed,
                                 int32_t max_new_tokens, const TokenSink& sink,
                                 std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now());
    // Whether generation stops after the eos token (default true; false for benchmarks: a fixed
    // number of decode steps).
    void set_stop_at_eos(bool stop) { stop_at_eos_ = stop; }
    void reset();

    slmc_tokenizer* tokenizer() { return tokenizer_.get(); }
    const Manifest& manifest() const { return manifest_; }
    int32_t eos_id() const { return eos_id_; }
    size_t copied_weights() const { return copied_weights_; }
    const GenerationStats& last_stats() const { return last_; }
    MemoryUse memory() const;

  private:
    std::string dir_;
    Manifest manifest_;
    std::unique_ptr<slmc_tokenizer> tokenizer_;
    std::unique_ptr<TvmModel> model_;
    int32_t eos_id_ = -1;
    bool stop_at_eos_ = true;
    size_t copied_weights_ = 0;
    uint64_t weights_bytes_ = 0;
    std::vector<tvm::ffi::Tensor> scales_;  // an int8 resident cache's key and value scales (manifest kv_cache.dtype)
    tvm::ffi::Tensor keys_, values_;  // copy contract: the cache main returned; resident: allocated once, max_context + 1 slots
    int64_t slots_ = 1;               // resident: slots in use (the sink included)
    bool huge_pages_ = false;         // resident: the cache's mappings ask for huge pages (plan_pages)
    std::vector<int32_t> context_;  // every token in the cache, then the pending one
    bool has_pending_ = false;      // context_.back() was sampled but not yet fed to the model
    GenerationStats last_;

    tvm::ffi::Tensor token_;        // int64 [1, 1]: the input of a one-token call, allocated once

    // Feeds `ids`: a prompt longer than kPrefillChunk (session.cpp) as calls of at most that many
    // tokens when only the last logits are asked for (resident contract), else one call.
    tvm::ffi::Tensor run(const std::vector<int32_t>& ids, bool last_only);
    tvm::ffi::Tensor run_call(const int32_t* ids, size_t count, bool last_only);
    int64_t cached() const;  // tokens in the KV cache
    // Resident contract: asks for huge pages on the cache when a generation filling `slots` slots per row
    // (the sink included) would make about those slots resident with them (advise_huge_pages_for), once.
    void plan_pages(int64_t slots);
    const float* last_logits(const tvm::ffi::Tensor& logits) const;
};

}  // namespace slmc
