// How the C API turns C++ exceptions into SLMC_E_* codes and the thread-local last-error text;
// shared by the tokenizer part (c_api.cpp) and the model part (runtime/c_api_model.cpp).
#pragma once

#include <new>
#include <stdexcept>
#include <string>

#include "../include/slmc_runtime.h"
#include "errors.hpp"

namespace slmc {

// The text slmc_last_error() returns (defined in c_api.cpp).
std::string& last_error();

inline int fail(int code, const std::string& message) {
    last_error() = message;
    return code;
}

// Runs `body` (returning an SLMC code); clears the last error first, maps exceptions to codes.
template <class F>
int guarded(F&& body) {
    try {
        last_error().clear();
        return body();
    } catch (const IoError& e) {
        return fail(SLMC_E_IO, e.what());
    } catch (const FormatError& e) {
        return fail(SLMC_E_FORMAT, e.what());
    } catch (const UnsupportedError& e) {
        return fail(SLMC_E_UNSUPPORTED, e.what());
    } catch (const IntegrityError& e) {
        return fail(SLMC_E_INTEGRITY, e.what());
    } catch (const ModelError& e) {
        return fail(SLMC_E_MODEL, e.what());
    } catch (const std::invalid_argument& e) {
        return fail(SLMC_E_INVALID_ARGUMENT, e.what());
    } catch (const std::bad_alloc&) {
        return fail(SLMC_E_INTERNAL, "out of memory");
    } catch (const std::exception& e) {
        return fail(SLMC_E_INTERNAL, std::string("internal error: ") + e.what());
    }
}

// `new Handle(arg)` under guarded(): nullptr (and `null_message`, or the exception's text, as the
// last error) when `arg` is NULL or the constructor throws.
template <class Handle>
Handle* open_handle(const char* arg, const char* null_message) {
    Handle* handle = nullptr;
    int rc = guarded([&] {
        if (!arg) return fail(SLMC_E_INVALID_ARGUMENT, null_message);
        handle = new Handle(arg);
        return SLMC_OK;
    });
    return rc == SLMC_OK ? handle : nullptr;
}

}  // namespace slmc
