/* slmc_runtime.h -- the embeddable C API of slmc's native (Python-free) runtime.
 *
 * Two parts: the TOKENIZER (a Hugging Face `tokenizer.json` read and applied natively, with token
 * ids identical to the `tokenizers` library for the types it accepts) and the MODEL (an slmc
 * artifact run by TVM's C++ runtime with memory-mapped weights, sampling and streamed tokens).
 * The tokenizer-only library (no TVM) defines the first part; the runtime library both. See
 * docs/runtime.md.
 *
 * Conventions
 *   - Every function that can fail returns 0 (or a non-NULL handle) on success and a negative
 *     SLMC_E* code (or NULL) on failure; slmc_last_error() then describes the failure.
 *   - Handles are not thread-safe: use one handle per thread, or serialize calls on a handle.
 *     Different handles may be used concurrently. The last-error text is per thread.
 *   - Text is UTF-8. Input that is not valid UTF-8 is read as Python's
 *     `bytes.decode("utf-8", "replace")` reads it: each maximal invalid subpart (Unicode 3.9,
 *     "U+FFFD substitution of maximal subparts") becomes one U+FFFD, and the result is then
 *     tokenized exactly as the Hugging Face library tokenizes that string.
 */
#ifndef SLMC_RUNTIME_H
#define SLMC_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SLMC_OK 0
#define SLMC_E_INVALID_ARGUMENT (-1) /* NULL handle/pointer, id out of range, bad sampling params, prompt too long */
#define SLMC_E_CAPACITY (-2)         /* output buffer too small; *count / *len holds the size needed */
#define SLMC_E_IO (-3)               /* file missing or unreadable */
#define SLMC_E_FORMAT (-4)           /* malformed file (JSON syntax, missing field, bad value, wrong format_version) */
#define SLMC_E_UNSUPPORTED (-5)      /* a tokenizer component, pattern or artifact kind this version does not implement */
#define SLMC_E_INTERNAL (-6)         /* out of memory or another unexpected failure */
#define SLMC_E_MODEL (-7)            /* TVM failed to load or run model.so (its message is kept) */
#define SLMC_E_INTEGRITY (-8)        /* an artifact file differs from its manifest (size or sha256) */

/* The message of the last failed call on this thread ("" when none); valid until the next call
 * on this thread. Messages name the file, JSON field or byte offset and what was expected. */
const char* slmc_last_error(void);

/* ------------------------------------------------------------------------------------------
 * Tokenizer (implemented)
 * ------------------------------------------------------------------------------------------ */

typedef struct slmc_tokenizer slmc_tokenizer;

/* Reads a Hugging Face `tokenizer.json` (or its gzip, `tokenizer.json.gz`, as slmc artifacts store
 * it, when the library was built with zlib: slmc_tokenizer_supports_gzip()). NULL on failure. */
slmc_tokenizer* slmc_tokenizer_open(const char* tokenizer_json_path);

/* 1 when this build reads `.gz` files (built with zlib), else 0. */
int slmc_tokenizer_supports_gzip(void);

/* Flags of slmc_tokenize_ex / slmc_detokenize. */
#define SLMC_NO_SPECIAL_TOKENS 1u   /* tokenize: do not apply the post-processor (HF add_special_tokens=False) */
#define SLMC_KEEP_SPECIAL_TOKENS 2u /* detokenize: keep special tokens (HF skip_special_tokens=False) */

/* Token ids of `utf8[0..len)` as Hugging Face `Tokenizer.encode(text, add_special_tokens=True)`
 * returns them: the tokenizer's post-processor adds its special tokens (Llama-style `<s>` BOS from a
 * TemplateProcessing; none for GPT-2-style ByteLevel), as `transformers` does when generating from
 * a prompt. Writes at most `capacity` ids and sets *count to the number of ids; when `capacity` is
 * too small it writes nothing, sets *count to the number needed and returns SLMC_E_CAPACITY. */
int slmc_tokenize(slmc_tokenizer* tok, const char* utf8, size_t len, int32_t* ids, size_t capacity,
                  size_t* count);

/* slmc_tokenize with flags (SLMC_NO_SPECIAL_TOKENS: HF add_special_tokens=False). */
int slmc_tokenize_ex(slmc_tokenizer* tok, const char* utf8, size_t len, unsigned flags, int32_t* ids,
                     size_t capacity, size_t* count);

/* The text of `ids[0..n)` as Hugging Face `Tokenizer.decode(ids, skip_special_tokens=True)` returns
 * it (flags SLMC_KEEP_SPECIAL_TOKENS: skip_special_tokens=False); ids the vocabulary lacks are
 * skipped, as HF skips them. Writes at most `capacity` bytes (no terminating NUL) and sets *len;
 * SLMC_E_CAPACITY with *len = bytes needed when too small. Bytes that do not form valid UTF-8
 * decode to U+FFFD as HF's decoders produce it. */
int slmc_detokenize(slmc_tokenizer* tok, const int32_t* ids, size_t n, unsigned flags, char* out,
                    size_t capacity, size_t* len);

/* Streaming detokenizer: feed ids one at a time (generation), get the text each one completes.
 * Same algorithm as Hugging Face `tokenizers.decoders.DecodeStream`: a token that ends inside a
 * UTF-8 sequence (byte-level or <0xXX> byte-fallback tokens) yields no text until a later token
 * completes the character; the concatenation of all outputs equals slmc_detokenize of all ids
 * (except a trailing incomplete character, which is never emitted). */
typedef struct slmc_detokenizer slmc_detokenizer;
slmc_detokenizer* slmc_detokenizer_open(slmc_tokenizer* tok, unsigned flags);
/* Writes the text `id` completes to out (possibly none: *len = 0). On SLMC_E_CAPACITY (*len = bytes
 * needed) the text is kept: fetch it with slmc_detokenizer_pending and a large enough buffer. */
int slmc_detokenizer_step(slmc_detokenizer* dt, int32_t id, char* out, size_t capacity, size_t* len);
int slmc_detokenizer_pending(slmc_detokenizer* dt, char* out, size_t capacity, size_t* len);
void slmc_detokenizer_close(slmc_detokenizer* dt);

/* Vocabulary size including added tokens (max id + 1). */
size_t slmc_tokenizer_vocab_size(const slmc_tokenizer* tok);
/* The id of a token string (model vocabulary or added token), or -1. */
int32_t slmc_token_to_id(const slmc_tokenizer* tok, const char* token);

void slmc_tokenizer_close(slmc_tokenizer* tok);

/* ------------------------------------------------------------------------------------------
 * Model runtime (implemented in libslmc_runtime.so of the model build, linked with TVM's C++
 * runtime: libtvm_runtime.so + libtvm_ffi.so; see docs/runtime.md). The tokenizer-only library
 * has no definitions of these functions.
 * ------------------------------------------------------------------------------------------ */

typedef struct slmc_model slmc_model;

/* How the next token is chosen, applied in Hugging Face's order:
 *   1. repetition_penalty (HF's definition): for every distinct id already in the context (the
 *      prompts and generated tokens since the last reset), a positive logit is divided by it and a
 *      negative one multiplied by it;
 *   2. temperature == 0: greedy -- the first maximum (numpy argmax); nothing below applies;
 *   3. logits / temperature; top_k > 0 keeps the k highest (ties: lower id first);
 *   4. top_p < 1 keeps the smallest prefix, in descending probability, whose mass reaches top_p;
 *   5. one draw from the softmax of what is left (double precision), with u in [0, 1) from
 *      splitmix64 seeded with `seed` at every slmc_generate call: state += 0x9E3779B97F4A7C15;
 *      z = state; z = (z ^ z>>30) * 0xBF58476D1CE4E5B9; z = (z ^ z>>27) * 0x94D049BB133111EB;
 *      out = z ^ z>>31; u = (out >> 11) * 2^-53. Same artifact, prompt, params and seed: same tokens.
 *   Sampling (temperature > 0) on a row with a NaN logit fails with SLMC_E_MODEL naming the token; on a
 *   row whose maximum is infinite (a +inf logit, or every logit -inf; softmax is undefined there) it takes
 *   greedy's first maximum, as the Python runtime does. */
typedef struct slmc_sampling_params {
    float temperature;        /* 0: greedy (argmax) */
    int32_t top_k;            /* 0: no top-k cut */
    float top_p;              /* 1.0: no nucleus cut; must lie in (0, 1] */
    float repetition_penalty; /* 1.0: none; must be > 0 */
    uint64_t seed;            /* sampling is deterministic for a given seed */
    int32_t max_new_tokens;   /* >= 1 */
} slmc_sampling_params;

/* Greedy, no cuts, seed 0, 32 new tokens (the defaults of `slmc generate` and `slmc-run`). */
slmc_sampling_params slmc_default_sampling_params(void);

/* Called once per generated token with its id and the text it completes (UTF-8, possibly empty,
 * not NUL-terminated; the streaming detokenizer skipping special tokens, as slmc_detokenizer_open
 * with flags 0). Return 0 to continue, non-zero to stop generation. */
typedef int (*slmc_token_callback)(void* user_data, int32_t token_id, const char* text, size_t text_len);

/* Opens an slmc artifact directory (manifest format_version 2, a causal LM with a KV cache and a
 * "huggingface" tokenizer): checks every listed file's size and the sha256 of model.so, the weights
 * and the tokenizer against manifest.json (SLMC_E_INTEGRITY naming the file), memory-maps
 * weights.safetensors and hands TVM views of the mapping (no copy; 64-byte aligned as slmc writes
 * it), loads model.so with TVM's C++ runtime (SLMC_E_MODEL with TVM's message) and reads the
 * tokenizer. NULL on failure (slmc_last_error). */
slmc_model* slmc_model_open(const char* artifact_dir);

/* Checks a deploy bundle (`slmc package`): `<bundle_dir>/bundle.json` (format_version 1) and the size
 * and sha256 of every file it lists -- the model files, manifest.json, the runtime libraries and
 * slmc-run. SLMC_E_INTEGRITY naming the first damaged or missing file, SLMC_E_FORMAT for a malformed
 * bundle.json, SLMC_E_IO when it is missing. `files_checked` (may be NULL) receives the count. A
 * library checking its own file detects damage, not tampering: a changed byte in the checking code
 * itself, or one the dynamic loader trips over first, is not reported by this function. */
int slmc_bundle_verify(const char* bundle_dir, size_t* files_checked);

/* Tokenizes `prompt` WITHOUT special tokens (SLMC_NO_SPECIAL_TOKENS -- as `slmc generate` and
 * slmc's Python tokenizer encode prompts), prefills it after the current context (the KV state of
 * earlier calls, plus their last generated token), then generates up to params->max_new_tokens
 * tokens, calling `callback` (may be NULL) per token. Stops after the tokenizer's eos token (the
 * manifest's tokenizer.eos_token; artifacts written before it was recorded never stop early), at
 * max_new_tokens, when the callback returns non-zero, or when the artifact's max_context is full.
 * SLMC_E_INVALID_ARGUMENT for an empty prompt, one that does not fit the context or bad params. */
int slmc_generate(slmc_model* model, const char* prompt, size_t prompt_len, const slmc_sampling_params* params,
                  slmc_token_callback callback, void* user_data);

/* slmc_generate from token ids (each in [0, vocab)) instead of text: for benchmarks with a fixed
 * prompt length. */
int slmc_generate_ids(slmc_model* model, const int32_t* ids, size_t count, const slmc_sampling_params* params,
                      slmc_token_callback callback, void* user_data);

/* stop != 0 (the default): generation ends after the eos token; 0: it runs to max_new_tokens (or
 * the context's end) -- a fixed number of decode steps, for benchmarks. */
int slmc_model_set_stop_at_eos(slmc_model* model, int stop);

/* Timings and counts of the last successful slmc_generate on this model. */
typedef struct slmc_generation_stats {
    int32_t prompt_tokens;    /* tokens of the prompt */
    int32_t generated_tokens; /* tokens passed to the callback */
    double ttft_seconds;      /* from the call to the first token (tokenize, prefill, sample) */
    double prefill_seconds;   /* the prefill call of the model */
    double decode_seconds;    /* from the first token to the last (generated_tokens - 1 model calls) */
    int32_t stopped_at_eos;   /* 1 when the last token is the eos token */
    int32_t stopped_at_context; /* 1 when max_context stopped generation */
} slmc_generation_stats;
int slmc_model_last_stats(const slmc_model* model, slmc_generation_stats* stats);

/* The model's tokenizer, owned by the model (do not close it); valid until slmc_model_close. */
slmc_tokenizer* slmc_model_tokenizer(slmc_model* model);
/* The eos token id generation stops at, or -1 when the manifest names none. */
int32_t slmc_model_eos_id(const slmc_model* model);
/* The artifact's max_context (prompt + generated tokens since the last reset), or 0 for NULL. */
int32_t slmc_model_max_context(const slmc_model* model);

/* The terms of the runner's memory bound (peak RSS <= weights file + KV cache at the context used +
 * a fixed allowance) and where this process's resident memory is now, by kind (Linux/Android
 * /proc/self/smaps; rss_available 0 and the rss_* fields 0 where it cannot be read). */
typedef struct slmc_memory_info {
    uint64_t weights_file_bytes;      /* weights.safetensors: mapped, used in place, never copied */
    uint64_t kv_cache_bytes;          /* keys + values of the slots in use (context tokens + 1 sink slot) */
    uint64_t kv_cache_reserved_bytes; /* address space of the cache (max_context + 1 slots); its pages
                                         become resident only as slots are written */
    int32_t rss_available;
    uint64_t rss_weights;             /* resident pages of the weights mapping */
    uint64_t rss_kv_cache;
    uint64_t rss_model_library;       /* model.so */
    uint64_t rss_tvm_libraries;       /* libtvm_runtime + libtvm_ffi */
    uint64_t rss_other_files;         /* the executable, libslmc_runtime, libc, libstdc++, ... */
    uint64_t rss_anonymous;           /* heap: tokenizer tables, TVM's memory pools, logits, stacks */
    uint64_t rss_total;               /* VmRSS now */
    uint64_t peak_rss;                /* VmHWM: the most this process has held at once */
    int32_t kv_cache_huge_pages;      /* 1: the cache asks for transparent huge pages, chosen when a generation's
                                         context makes them cost about the slots used (else 4 KB pages) */
} slmc_memory_info;
int slmc_model_memory(const slmc_model* model, slmc_memory_info* info);

/* Clears the KV cache and the context (a new conversation). */
int slmc_model_reset(slmc_model* model);

void slmc_model_close(slmc_model* model);

#ifdef __cplusplus
}
#endif

#endif /* SLMC_RUNTIME_H */
