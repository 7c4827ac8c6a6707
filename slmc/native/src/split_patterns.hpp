// The regular expressions of known pre-tokenizers, as hand-written matchers with Oniguruma's
// semantics (leftmost match, alternatives tried in order, greedy quantifiers with backtracking).
// A pattern is identified by its exact string; any other string is UnsupportedError naming it.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace slmc {

using Span = std::pair<size_t, size_t>;  // [begin, end) in code points
using SplitMatcher = std::vector<Span> (*)(const std::u32string& text);

// Exact regex source as written in tokenizer.json (after JSON unescaping).
SplitMatcher find_split_matcher(const std::string& regex);
extern const char* const kGpt2Pattern;

}  // namespace slmc
