/* slmc_runtime.h -- the embeddable C API of slmc's native (Python-free) runtime.
 *
 * This version implements the TOKENIZER part: a Hugging Face `tokenizer.json` read and applied
 * natively, with token ids identical to the `tokenizers` library for the types it accepts (see
 * docs/runtime.md). The MODEL part at the end of this header is declared for the model runtime;
 * it is not implemented in this version (no definition is compiled: linking against it fails).
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
#define SLMC_E_INVALID_ARGUMENT (-1) /* NULL handle/pointer, id out of range for the operation */
#define SLMC_E_CAPACITY (-2)         /* output buffer too small; *count / *len holds the size needed */
#define SLMC_E_IO (-3)               /* file missing or unreadable */
#define SLMC_E_FORMAT (-4)           /* malformed file (JSON syntax, missing field, bad value) */
#define SLMC_E_UNSUPPORTED (-5)      /* a tokenizer component or pattern this version does not implement */
#define SLMC_E_INTERNAL (-6)         /* out of memory or another unexpected failure */

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
 * Model runtime -- DECLARED FOR THE MODEL RUNTIME; NOT IMPLEMENTED IN THIS VERSION.
 * No definitions of these functions are compiled yet: a program calling them does not link.
 * The intended contract, so embedders can see the shape of the API:
 * ------------------------------------------------------------------------------------------ */

typedef struct slmc_model slmc_model;

typedef struct slmc_sampling_params {
    float temperature;        /* 0: greedy (argmax) */
    int32_t top_k;            /* 0: no top-k cut */
    float top_p;              /* 1.0: no nucleus cut */
    float repetition_penalty; /* 1.0: none */
    uint64_t seed;            /* sampling is deterministic for a given seed */
    int32_t max_new_tokens;
} slmc_sampling_params;

/* Called once per generated token with its id and the text it completes (UTF-8, possibly empty,
 * not NUL-terminated). Return 0 to continue, non-zero to stop generation. */
typedef int (*slmc_token_callback)(void* user_data, int32_t token_id, const char* text, size_t text_len);

/* Opens an slmc artifact directory: loads model.so with TVM's C++ runtime, memory-maps the weights,
 * reads the tokenizer. NULL on failure (slmc_last_error). */
slmc_model* slmc_model_open(const char* artifact_dir);

/* Tokenizes `prompt`, prefills, decodes up to params->max_new_tokens tokens (stopping at the
 * model's end-of-sequence token), calling `callback` per token. Continues the current KV state. */
int slmc_generate(slmc_model* model, const char* prompt, size_t prompt_len, const slmc_sampling_params* params,
                  slmc_token_callback callback, void* user_data);

/* Clears the KV cache (a new conversation). */
int slmc_model_reset(slmc_model* model);

void slmc_model_close(slmc_model* model);

#ifdef __cplusplus
}
#endif

#endif /* SLMC_RUNTIME_H */
