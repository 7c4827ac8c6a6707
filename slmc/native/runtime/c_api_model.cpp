// The model part of include/slmc_runtime.h over a Session; exceptions become SLMC_E_* codes.
#include <memory>
#include <string>

#include "../include/slmc_runtime.h"
#include "../src/c_api_guard.hpp"
#include "bundle.hpp"
#include "process_memory.hpp"
#include "session.hpp"

struct slmc_model {
    slmc::Session session;
    explicit slmc_model(const std::string& dir) : session(dir) {}
};

using slmc::fail;
using slmc::guarded;

namespace {

slmc::Sampling sampling_of(const slmc_sampling_params& params) {
    slmc::Sampling s;
    s.temperature = params.temperature;
    s.top_k = params.top_k;
    s.top_p = params.top_p;
    s.repetition_penalty = params.repetition_penalty;
    return s;
}

slmc::TokenSink sink_of(slmc_token_callback callback, void* user_data) {
    return [callback, user_data](int32_t id, const std::string& text) {
        return callback == nullptr || callback(user_data, id, text.data(), text.size()) == 0;
    };
}

// A generation call under guarded(): SLMC_E_INVALID_ARGUMENT with `null_message` for a NULL model or
// params or `input_ok` false, else `run(sampling)`.
template <class Run>
int generation(slmc_model* model, bool input_ok, const slmc_sampling_params* params, const char* null_message, Run run) {
    return guarded([&] {
        if (!model || !input_ok || !params) return fail(SLMC_E_INVALID_ARGUMENT, null_message);
        run(sampling_of(*params));
        return SLMC_OK;
    });
}

}  // namespace

extern "C" {

slmc_sampling_params slmc_default_sampling_params(void) {
    slmc_sampling_params p;
    p.temperature = 0.0f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.repetition_penalty = 1.0f;
    p.seed = 0;
    p.max_new_tokens = 32;
    return p;
}

slmc_model* slmc_model_open(const char* artifact_dir) {
    return slmc::open_handle<slmc_model>(artifact_dir, "slmc_model_open: artifact_dir is NULL");
}

int slmc_bundle_verify(const char* bundle_dir, size_t* files_checked) {
    return guarded([&] {
        if (!bundle_dir) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_bundle_verify: bundle_dir is NULL");
        size_t n = slmc::verify_bundle(bundle_dir);
        if (files_checked) *files_checked = n;
        return SLMC_OK;
    });
}

int slmc_generate(slmc_model* model, const char* prompt, size_t prompt_len, const slmc_sampling_params* params,
                  slmc_token_callback callback, void* user_data) {
    return generation(model, prompt || !prompt_len, params, "slmc_generate: NULL model, prompt or params",
                      [&](const slmc::Sampling& s) {
                          model->session.generate(std::string(prompt ? prompt : "", prompt_len), s, params->seed,
                                                  params->max_new_tokens, sink_of(callback, user_data));
                      });
}

int slmc_generate_ids(slmc_model* model, const int32_t* ids, size_t count, const slmc_sampling_params* params,
                      slmc_token_callback callback, void* user_data) {
    return generation(model, ids || !count, params, "slmc_generate_ids: NULL model, ids or params",
                      [&](const slmc::Sampling& s) {
                          model->session.generate_ids(std::vector<int32_t>(ids, ids + count), s, params->seed,
                                                      params->max_new_tokens, sink_of(callback, user_data));
                      });
}

int slmc_model_set_stop_at_eos(slmc_model* model, int stop) {
    return guarded([&] {
        if (!model) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_model_set_stop_at_eos: model is NULL");
        model->session.set_stop_at_eos(stop != 0);
        return SLMC_OK;
    });
}

int slmc_model_last_stats(const slmc_model* model, slmc_generation_stats* stats) {
    return guarded([&] {
        if (!model || !stats) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_model_last_stats: NULL model or stats");
        const slmc::GenerationStats& g = model->session.last_stats();
        stats->prompt_tokens = g.prompt_tokens;
        stats->generated_tokens = g.generated_tokens;
        stats->ttft_seconds = g.ttft_seconds;
        stats->prefill_seconds = g.prefill_seconds;
        stats->decode_seconds = g.decode_seconds;
        stats->stopped_at_eos = g.stopped_at_eos ? 1 : 0;
        stats->stopped_at_context = g.stopped_at_context ? 1 : 0;
        return SLMC_OK;
    });
}

int slmc_model_memory(const slmc_model* model, slmc_memory_info* info) {
    return guarded([&] {
        if (!model || !info) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_model_memory: NULL model or info");
        slmc::MemoryUse use = model->session.memory();
        slmc::ResidentMemory rss = slmc::resident_memory("weights.safetensors", use.kv_cache_data);
        *info = slmc_memory_info{};
        info->weights_file_bytes = use.weights_file_bytes;
        info->kv_cache_bytes = use.kv_cache_bytes;
        info->kv_cache_reserved_bytes = use.kv_cache_reserved_bytes;
        info->kv_cache_huge_pages = use.kv_cache_huge_pages ? 1 : 0;
        info->rss_available = rss.available ? 1 : 0;
        info->rss_weights = rss.weights;
        info->rss_kv_cache = rss.kv_cache;
        info->rss_model_library = rss.model_library;
        info->rss_tvm_libraries = rss.tvm_libraries;
        info->rss_other_files = rss.other_files;
        info->rss_anonymous = rss.anonymous;
        info->rss_total = rss.total;
        info->peak_rss = rss.peak;
        return SLMC_OK;
    });
}

slmc_tokenizer* slmc_model_tokenizer(slmc_model* model) { return model ? model->session.tokenizer() : nullptr; }

int32_t slmc_model_eos_id(const slmc_model* model) { return model ? model->session.eos_id() : -1; }

int32_t slmc_model_max_context(const slmc_model* model) {
    return model ? static_cast<int32_t>(model->session.manifest().kv_cache.max_context) : 0;
}

int slmc_model_reset(slmc_model* model) {
    return guarded([&] {
        if (!model) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_model_reset: model is NULL");
        model->session.reset();
        return SLMC_OK;
    });
}

void slmc_model_close(slmc_model* model) { delete model; }

}  // extern "C"
