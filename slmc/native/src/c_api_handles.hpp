// The C API's tokenizer handle, shared with the model part (a model owns one and lends it out
// through slmc_model_tokenizer).
#pragma once

#include <string>

#include "tokenizer.hpp"

struct slmc_tokenizer {
    slmc::Tokenizer impl;
    explicit slmc_tokenizer(const std::string& path) : impl(path) {}
};
