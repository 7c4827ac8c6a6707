// slmc-run: generate text with an slmc artifact through the C API of slmc_runtime.h, no Python.
//
//   slmc-run DIR (--prompt TEXT | --bench-prompt-tokens N) [--max-new-tokens N] [--temperature T]
//            [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--ignore-eos] [--json]
//            [--evict-bytes N]
//
// DIR is an artifact directory or a deploy bundle (`slmc package`). A directory holding bundle.json
// is a bundle: every file bundle.json lists (model files, manifest, runtime libraries, this runner)
// is checked for size and sha256 before the model is opened, and a mismatch is refused (exit 1).
// Without --json the prompt and then each token's text are written to stdout as they arrive.
// --json prints one object: ok, tokens, text, prompt_tokens, generated_tokens, ttft_ms,
// prefill_tokens_per_s, decode_tokens_per_s, token_ms (the wall time between consecutive tokens'
// arrivals: one decode step with its sampling and detokenizing each, the first token excluded as it
// ends the prefill), peak_rss_bytes (VmHWM: this executable's own high-water mark) next to the terms of
// its bound: weights_file_bytes, kv_cache_bytes (the context used) and kv_cache_reserved_bytes,
// kv_cache_huge_pages (whether the cache asked for huge pages: only when the context used fills about all
// of the pages they would make resident, slmc/native/runtime/kv_pages.hpp), then
// rss_at_end_bytes (resident memory at the end by kind, /proc/self/smaps; null where unreadable) and
// bundle_files_checked (null for an artifact directory), evict_bytes. Benchmark mode: --bench-prompt-tokens N
// prefills N fixed token ids (i * 7 + 1) mod 64 instead of a text, --ignore-eos decodes exactly
// --max-new-tokens tokens. --evict-bytes N (benchmarking the caches' share of a step, slmc.bench.evict): after
// each token arrives, N bytes of a buffer of this process are written once (every cache line), so the next step
// starts with the last level cache holding that buffer rather than the model; token_ms then counts from the end
// of that write, not the token's arrival, and peak_rss_bytes includes the buffer. On failure the error text goes to stderr (and, with --json,
// {"ok": false, "error": ...} to stdout); exit 1 (2 for a usage error).
#include <sys/resource.h>
#include <sys/stat.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../include/slmc_runtime.h"

namespace {

const char* kUsage =
    "usage: slmc-run DIR (--prompt TEXT | --bench-prompt-tokens N) [--max-new-tokens N] [--temperature T]\n"
    "                [--top-k K] [--top-p P] [--repetition-penalty R] [--seed S] [--ignore-eos] [--json]\n"
    "                [--evict-bytes N]\n";

struct Options {
    std::string artifact, prompt;
    bool has_prompt = false, json = false, ignore_eos = false;
    long long bench_prompt_tokens = 0;
    long long evict_bytes = 0;
    slmc_sampling_params params = slmc_default_sampling_params();
};

[[noreturn]] void usage_error(const std::string& message) {
    std::fprintf(stderr, "slmc-run: %s\n%s", message.c_str(), kUsage);
    std::exit(2);
}

double number(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(text, &end);
    if (errno || end == text || *end) usage_error(std::string(flag) + " takes a number, got '" + text + "'");
    return v;
}

long long integer(const char* flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    long long v = std::strtoll(text, &end, 10);
    if (errno || end == text || *end) usage_error(std::string(flag) + " takes an integer, got '" + text + "'");
    return v;
}

Options parse(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> const char* {
            if (i + 1 >= argc) usage_error(a + " needs a value");
            return argv[++i];
        };
        if (a == "--prompt" || a == "-p") o.prompt = value(), o.has_prompt = true;
        else if (a == "--max-new-tokens" || a == "-n") o.params.max_new_tokens = static_cast<int32_t>(integer("--max-new-tokens", value()));
        else if (a == "--temperature") o.params.temperature = static_cast<float>(number("--temperature", value()));
        else if (a == "--top-k") o.params.top_k = static_cast<int32_t>(integer("--top-k", value()));
        else if (a == "--top-p") o.params.top_p = static_cast<float>(number("--top-p", value()));
        else if (a == "--repetition-penalty") o.params.repetition_penalty = static_cast<float>(number("--repetition-penalty", value()));
        else if (a == "--seed") o.params.seed = static_cast<uint64_t>(integer("--seed", value()));
        else if (a == "--json") o.json = true;
        else if (a == "--ignore-eos") o.ignore_eos = true;
        else if (a == "--bench-prompt-tokens") o.bench_prompt_tokens = integer("--bench-prompt-tokens", value());
        else if (a == "--evict-bytes") o.evict_bytes = integer("--evict-bytes", value());
        else if (a == "--help" || a == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
        else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
        else if (o.artifact.empty()) o.artifact = a;
        else usage_error("unexpected argument '" + a + "'");
    }
    if (o.artifact.empty()) usage_error("DIR is required");
    if (o.has_prompt == (o.bench_prompt_tokens > 0)) usage_error("give one of --prompt and --bench-prompt-tokens (N >= 1)");
    if (o.evict_bytes < 0) usage_error("--evict-bytes takes a size of at least 0 bytes");
    return o;
}

std::string json_string(const std::string& s) {
    std::string out = "\"";
    for (unsigned char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += static_cast<char>(c);  // UTF-8 passes through
                }
        }
    }
    return out + "\"";
}

struct Run {
    bool stream;
    std::vector<int32_t> tokens;
    std::vector<std::chrono::steady_clock::time_point> arrivals;  // when each token reached the callback
    std::vector<unsigned char> evict;  // --evict-bytes: written after each token
    std::vector<std::chrono::steady_clock::time_point> resumed;  // when that write ended
};

int on_token(void* user, int32_t id, const char* text, size_t len) {
    auto* run = static_cast<Run*>(user);
    run->arrivals.push_back(std::chrono::steady_clock::now());
    run->tokens.push_back(id);
    if (run->stream && len) {
        std::fwrite(text, 1, len, stdout);
        std::fflush(stdout);
    }
    if (!run->evict.empty()) {
        for (unsigned char& byte : run->evict) byte = static_cast<unsigned char>(byte + 1);
        run->resumed.push_back(std::chrono::steady_clock::now());
    }
    return 0;
}

int failure(const Options& o, const std::string& what) {
    std::string message = what + ": " + slmc_last_error();
    std::fprintf(stderr, "slmc-run: %s\n", message.c_str());
    if (o.json) std::printf("{\"ok\": false, \"error\": %s}\n", json_string(message).c_str());
    return 1;
}

// The resident memory at the end of the run by kind, as a JSON object (null where smaps is unreadable).
std::string rss_breakdown(const slmc_memory_info& m) {
    if (!m.rss_available) return "null";
    const std::pair<const char*, uint64_t> parts[] = {
        {"weights", m.rss_weights},         {"kv_cache", m.rss_kv_cache},       {"model_library", m.rss_model_library},
        {"tvm_libraries", m.rss_tvm_libraries}, {"other_files", m.rss_other_files}, {"anonymous", m.rss_anonymous},
        {"total", m.rss_total},             {"peak", m.peak_rss}};
    std::string out = "{";
    for (const auto& [name, bytes] : parts)
        out += (out.size() > 1 ? ", \"" : "\"") + std::string(name) + "\": " + std::to_string(bytes);
    return out + "}";
}

}  // namespace

bool is_file(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    std::string bundle_files = "null";
    if (is_file(o.artifact + "/bundle.json")) {
        size_t checked = 0;
        if (slmc_bundle_verify(o.artifact.c_str(), &checked) != SLMC_OK) return failure(o, "bundle check failed");
        bundle_files = std::to_string(checked);
    }
    slmc_model* model = slmc_model_open(o.artifact.c_str());
    if (!model) return failure(o, "cannot open " + o.artifact);
    if (o.ignore_eos) slmc_model_set_stop_at_eos(model, 0);
    Run run{!o.json, {}, {}, std::vector<unsigned char>(static_cast<size_t>(o.evict_bytes), 0), {}};
    if (run.stream && o.has_prompt) {
        std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
        std::fflush(stdout);
    }
    std::vector<int32_t> bench_ids;
    for (long long i = 0; i < o.bench_prompt_tokens; ++i) bench_ids.push_back(static_cast<int32_t>((i * 7 + 1) % 64));
    int rc = o.has_prompt ? slmc_generate(model, o.prompt.data(), o.prompt.size(), &o.params, on_token, &run)
                          : slmc_generate_ids(model, bench_ids.data(), bench_ids.size(), &o.params, on_token, &run);
    if (rc != SLMC_OK) {
        int rc = failure(o, "generation failed");
        slmc_model_close(model);
        return rc;
    }
    if (!o.json) {
        std::fputc('\n', stdout);
        slmc_model_close(model);
        return 0;
    }
    slmc_generation_stats stats;
    slmc_model_last_stats(model, &stats);
    size_t len = 0;
    std::string text;
    slmc_tokenizer* tok = slmc_model_tokenizer(model);
    if (slmc_detokenize(tok, run.tokens.data(), run.tokens.size(), 0, nullptr, 0, &len) == SLMC_E_CAPACITY || len == 0) {
        text.resize(len);
        if (len && slmc_detokenize(tok, run.tokens.data(), run.tokens.size(), 0, &text[0], len, &len) != SLMC_OK) {
            int rc = failure(o, "detokenizing failed");
            slmc_model_close(model);
            return rc;
        }
    }
    // The peak of this program alone: VmHWM starts afresh at exec, while getrusage's ru_maxrss also keeps the
    // high-water mark of the process image exec replaced (a Python parent's forked copy: 200+ MB). ru_maxrss
    // only where /proc is unreadable.
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    slmc_memory_info memory;
    if (slmc_model_memory(model, &memory) != SLMC_OK) {
        int rc = failure(o, "reading the memory use failed");
        slmc_model_close(model);
        return rc;
    }
    std::string ids;
    for (size_t i = 0; i < run.tokens.size(); ++i) ids += (i ? ", " : "") + std::to_string(run.tokens[i]);
    std::string token_ms;
    for (size_t i = 1; i < run.arrivals.size(); ++i) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%s%.4f", i > 1 ? ", " : "",
                      std::chrono::duration<double, std::milli>(
                          run.arrivals[i] - (run.resumed.empty() ? run.arrivals[i - 1] : run.resumed[i - 1])).count());
        token_ms += buf;
    }
    double decode_rate = stats.generated_tokens > 1 && stats.decode_seconds > 0 ? (stats.generated_tokens - 1) / stats.decode_seconds : 0;
    double prefill_rate = stats.prefill_seconds > 0 ? stats.prompt_tokens / stats.prefill_seconds : 0;
    std::printf(
        "{\"ok\": true, \"tokens\": [%s], \"text\": %s, \"prompt_tokens\": %d, \"generated_tokens\": %d, "
        "\"stopped_at_eos\": %s, \"ttft_ms\": %.3f, \"prefill_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, "
        "\"token_ms\": [%s], \"peak_rss_bytes\": %lld, \"weights_file_bytes\": %llu, \"kv_cache_bytes\": %llu, \"kv_cache_reserved_bytes\": %llu, "
        "\"kv_cache_huge_pages\": %s, \"rss_at_end_bytes\": %s, \"bundle_files_checked\": %s, \"evict_bytes\": %lld}\n",
        ids.c_str(), json_string(text).c_str(), stats.prompt_tokens, stats.generated_tokens,
        stats.stopped_at_eos ? "true" : "false", stats.ttft_seconds * 1e3, prefill_rate, decode_rate, token_ms.c_str(),
        memory.rss_available ? static_cast<long long>(memory.peak_rss) : static_cast<long long>(usage.ru_maxrss) * 1024LL, static_cast<unsigned long long>(memory.weights_file_bytes),
        static_cast<unsigned long long>(memory.kv_cache_bytes), static_cast<unsigned long long>(memory.kv_cache_reserved_bytes),
        memory.kv_cache_huge_pages ? "true" : "false", rss_breakdown(memory).c_str(), bundle_files.c_str(), o.evict_bytes);
    slmc_model_close(model);
    return 0;
}
