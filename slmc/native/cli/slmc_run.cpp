// slmc-run: generate text with an slmc artifact through the C API of slmc_runtime.h, no Python.
//
//   slmc-run ARTIFACT_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]
//            [--top-p P] [--repetition-penalty R] [--seed S] [--json]
//
// Without --json the prompt and then each token's text are written to stdout as they arrive.
// --json prints one object: ok, tokens, text, prompt_tokens, generated_tokens, ttft_ms,
// prefill_tokens_per_s, decode_tokens_per_s, peak_rss_bytes (getrusage ru_maxrss). On failure the
// error text goes to stderr (and, with --json, {"ok": false, "error": ...} to stdout); exit 1
// (2 for a usage error).
#include <sys/resource.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../include/slmc_runtime.h"

namespace {

const char* kUsage =
    "usage: slmc-run ARTIFACT_DIR --prompt TEXT [--max-new-tokens N] [--temperature T] [--top-k K]\n"
    "                [--top-p P] [--repetition-penalty R] [--seed S] [--json]\n";

struct Options {
    std::string artifact, prompt;
    bool has_prompt = false, json = false;
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
        else if (a == "--help" || a == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
        else if (!a.empty() && a[0] == '-') usage_error("unknown option " + a);
        else if (o.artifact.empty()) o.artifact = a;
        else usage_error("unexpected argument '" + a + "'");
    }
    if (o.artifact.empty()) usage_error("ARTIFACT_DIR is required");
    if (!o.has_prompt) usage_error("--prompt is required");
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
};

int on_token(void* user, int32_t id, const char* text, size_t len) {
    auto* run = static_cast<Run*>(user);
    run->tokens.push_back(id);
    if (run->stream && len) {
        std::fwrite(text, 1, len, stdout);
        std::fflush(stdout);
    }
    return 0;
}

int failure(const Options& o, const std::string& what) {
    std::string message = what + ": " + slmc_last_error();
    std::fprintf(stderr, "slmc-run: %s\n", message.c_str());
    if (o.json) std::printf("{\"ok\": false, \"error\": %s}\n", json_string(message).c_str());
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    Options o = parse(argc, argv);
    slmc_model* model = slmc_model_open(o.artifact.c_str());
    if (!model) return failure(o, "cannot open " + o.artifact);
    Run run{!o.json, {}};
    if (run.stream) {
        std::fwrite(o.prompt.data(), 1, o.prompt.size(), stdout);
        std::fflush(stdout);
    }
    if (slmc_generate(model, o.prompt.data(), o.prompt.size(), &o.params, on_token, &run) != SLMC_OK) {
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
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    std::string ids;
    for (size_t i = 0; i < run.tokens.size(); ++i) ids += (i ? ", " : "") + std::to_string(run.tokens[i]);
    double decode_rate = stats.generated_tokens > 1 && stats.decode_seconds > 0 ? (stats.generated_tokens - 1) / stats.decode_seconds : 0;
    double prefill_rate = stats.prefill_seconds > 0 ? stats.prompt_tokens / stats.prefill_seconds : 0;
    std::printf(
        "{\"ok\": true, \"tokens\": [%s], \"text\": %s, \"prompt_tokens\": %d, \"generated_tokens\": %d, "
        "\"stopped_at_eos\": %s, \"ttft_ms\": %.3f, \"prefill_tokens_per_s\": %.3f, \"decode_tokens_per_s\": %.3f, "
        "\"peak_rss_bytes\": %lld}\n",
        ids.c_str(), json_string(text).c_str(), stats.prompt_tokens, stats.generated_tokens,
        stats.stopped_at_eos ? "true" : "false", stats.ttft_seconds * 1e3, prefill_rate, decode_rate,
        static_cast<long long>(usage.ru_maxrss) * 1024LL);
    slmc_model_close(model);
    return 0;
}
