// The C API of include/slmc_runtime.h (tokenizer part): exceptions become SLMC_E_* codes and the
// thread-local last-error text.
#include <cstring>
#include <new>
#include <string>

#include "../include/slmc_runtime.h"
#include "c_api_guard.hpp"
#include "c_api_handles.hpp"
#include "errors.hpp"
#include "read_file.hpp"
#include "tokenizer.hpp"

struct slmc_detokenizer {
    slmc::DecodeStream impl;
    std::string pending;  // text not yet delivered (the caller's buffer was too small)
    slmc_detokenizer(const slmc::Tokenizer& tok, bool skip) : impl(tok, skip) {}
};

namespace slmc {
std::string& last_error() {
    thread_local std::string text;
    return text;
}
}  // namespace slmc

namespace {

using slmc::fail;
using slmc::guarded;

int write_out(const std::string& text, char* out, size_t capacity, size_t* len) {
    *len = text.size();
    if (text.size() > capacity) return fail(SLMC_E_CAPACITY, "output buffer holds " + std::to_string(capacity) + " bytes; " + std::to_string(text.size()) + " needed");
    if (!text.empty()) std::memcpy(out, text.data(), text.size());
    return SLMC_OK;
}

}  // namespace

extern "C" {

const char* slmc_last_error(void) { return slmc::last_error().c_str(); }

int slmc_tokenizer_supports_gzip(void) { return slmc::gzip_supported() ? 1 : 0; }

slmc_tokenizer* slmc_tokenizer_open(const char* path) {
    return slmc::open_handle<slmc_tokenizer>(path, "slmc_tokenizer_open: path is NULL");
}

int slmc_tokenize_ex(slmc_tokenizer* tok, const char* utf8, size_t len, unsigned flags, int32_t* ids, size_t capacity,
                     size_t* count) {
    return guarded([&] {
        if (!tok || (!utf8 && len) || !count || (!ids && capacity))
            return fail(SLMC_E_INVALID_ARGUMENT, "slmc_tokenize: NULL tokenizer, text, ids or count");
        std::vector<int32_t> out = tok->impl.encode(utf8 ? utf8 : "", len, !(flags & SLMC_NO_SPECIAL_TOKENS));
        *count = out.size();
        if (out.size() > capacity)
            return fail(SLMC_E_CAPACITY, "ids buffer holds " + std::to_string(capacity) + " ids; " + std::to_string(out.size()) + " needed");
        if (!out.empty()) std::memcpy(ids, out.data(), out.size() * sizeof(int32_t));
        return SLMC_OK;
    });
}

int slmc_tokenize(slmc_tokenizer* tok, const char* utf8, size_t len, int32_t* ids, size_t capacity, size_t* count) {
    return slmc_tokenize_ex(tok, utf8, len, 0, ids, capacity, count);
}

int slmc_detokenize(slmc_tokenizer* tok, const int32_t* ids, size_t n, unsigned flags, char* out, size_t capacity, size_t* len) {
    return guarded([&] {
        if (!tok || (!ids && n) || !len || (!out && capacity))
            return fail(SLMC_E_INVALID_ARGUMENT, "slmc_detokenize: NULL tokenizer, ids, out or len");
        std::vector<int32_t> v(ids, ids + n);
        return write_out(tok->impl.decode(v, !(flags & SLMC_KEEP_SPECIAL_TOKENS)), out, capacity, len);
    });
}

slmc_detokenizer* slmc_detokenizer_open(slmc_tokenizer* tok, unsigned flags) {
    slmc_detokenizer* dt = nullptr;
    int rc = guarded([&] {
        if (!tok) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_detokenizer_open: tokenizer is NULL");
        dt = new slmc_detokenizer(tok->impl, !(flags & SLMC_KEEP_SPECIAL_TOKENS));
        return SLMC_OK;
    });
    return rc == SLMC_OK ? dt : nullptr;
}

int slmc_detokenizer_step(slmc_detokenizer* dt, int32_t id, char* out, size_t capacity, size_t* len) {
    return guarded([&] {
        if (!dt || !len || (!out && capacity)) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_detokenizer_step: NULL argument");
        dt->pending += dt->impl.step(id);
        int rc = write_out(dt->pending, out, capacity, len);
        if (rc == SLMC_OK) dt->pending.clear();
        return rc;
    });
}

int slmc_detokenizer_pending(slmc_detokenizer* dt, char* out, size_t capacity, size_t* len) {
    return guarded([&] {
        if (!dt || !len || (!out && capacity)) return fail(SLMC_E_INVALID_ARGUMENT, "slmc_detokenizer_pending: NULL argument");
        int rc = write_out(dt->pending, out, capacity, len);
        if (rc == SLMC_OK) dt->pending.clear();
        return rc;
    });
}

void slmc_detokenizer_close(slmc_detokenizer* dt) { delete dt; }

size_t slmc_tokenizer_vocab_size(const slmc_tokenizer* tok) { return tok ? tok->impl.vocab_size() : 0; }

int32_t slmc_token_to_id(const slmc_tokenizer* tok, const char* token) {
    return tok && token ? tok->impl.token_to_id(token) : -1;
}

void slmc_tokenizer_close(slmc_tokenizer* tok) { delete tok; }

}  // extern "C"
