#include "split_patterns.hpp"

#include "errors.hpp"
#include "unicode.hpp"

namespace slmc {
namespace {

bool is_other(char32_t c) { return !is_white_space(c) && !is_letter(c) && !is_number(c); }  // [^\s\p{L}\p{N}]
bool is_crlf(char32_t c) { return c == '\r' || c == '\n'; }

// Onig's (?i) fold of the ASCII letters used by contractions: 's' also matches U+017F (long s).
bool same_letter(char32_t c, char lower, bool fold) {
    if (c == char32_t(lower)) return true;
    if (!fold) return false;
    if (c == char32_t(lower - 'a' + 'A')) return true;
    return lower == 's' && c == 0x17F;
}

// 's|'t|'re|'ve|'m|'ll|'d at i (optionally case-insensitive): length matched or 0.
size_t contraction(const std::u32string& t, size_t i, bool fold) {
    static const char* const kSuffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    if (t[i] != '\'') return 0;
    for (const char* suffix : kSuffixes) {
        size_t k = 0;
        while (suffix[k] && i + 1 + k < t.size() && same_letter(t[i + 1 + k], suffix[k], fold)) ++k;
        if (!suffix[k]) return 1 + k;
    }
    return 0;
}

template <class Pred>
size_t run(const std::u32string& t, size_t i, Pred pred) {
    size_t j = i;
    while (j < t.size() && pred(t[j])) ++j;
    return j - i;
}

// \s+(?!\S) at i: the whitespace run, minus its last character when a non-space follows (0 if none left).
size_t space_not_before_nonspace(const std::u32string& t, size_t i) {
    size_t n = run(t, i, is_white_space);
    if (n == 0) return 0;
    if (i + n == t.size()) return n;
    return n - 1;
}

// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2_at(const std::u32string& t, size_t i) {
    if (size_t n = contraction(t, i, false)) return n;
    bool sp = t[i] == ' ' && i + 1 < t.size();
    for (auto cls : {is_letter, is_number, is_other}) {
        if (sp && cls(t[i + 1])) return 1 + run(t, i + 1, cls);
        if (cls(t[i])) return run(t, i, cls);
    }
    if (size_t n = space_not_before_nonspace(t, i)) return n;
    return run(t, i, is_white_space);
}

// (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
// with \p{N}{1,max_digits}.
size_t llama3_family_at(const std::u32string& t, size_t i, size_t max_digits) {
    if (size_t n = contraction(t, i, true)) return n;
    char32_t c = t[i];
    bool prefix_ok = !is_crlf(c) && !is_letter(c) && !is_number(c);
    if (prefix_ok && i + 1 < t.size() && is_letter(t[i + 1])) return 1 + run(t, i + 1, is_letter);
    if (is_letter(c)) return run(t, i, is_letter);
    if (is_number(c)) {
        size_t n = run(t, i, is_number);
        return n < max_digits ? n : max_digits;
    }
    size_t start = i;
    if (c == ' ' && i + 1 < t.size() && is_other(t[i + 1])) ++start;
    if (is_other(t[start])) {
        size_t end = start + run(t, start, is_other);
        end += run(t, end, is_crlf);
        return end - i;
    }
    // \s*[\r\n]+ : through the last \r or \n of the whitespace run.
    size_t ws = run(t, i, is_white_space);
    for (size_t k = i + ws; k > i; --k)
        if (is_crlf(t[k - 1])) return k - i;
    if (size_t n = space_not_before_nonspace(t, i)) return n;
    return ws;
}

template <size_t (*At)(const std::u32string&, size_t)>
std::vector<Span> find_all(const std::u32string& t) {
    std::vector<Span> spans;
    size_t i = 0;
    while (i < t.size()) {
        size_t n = At(t, i);
        if (n == 0) { ++i; continue; }  // no match starting here: the engine tries the next position
        spans.emplace_back(i, i + n);
        i += n;
    }
    return spans;
}

size_t llama3_at(const std::u32string& t, size_t i) { return llama3_family_at(t, i, 3); }
size_t qwen2_at(const std::u32string& t, size_t i) { return llama3_family_at(t, i, 1); }

struct KnownPattern {
    const char* regex;
    SplitMatcher matcher;
};

const KnownPattern kKnown[] = {
    // GPT-2 (ByteLevel's built-in regex; also written out in Split pre-tokenizers).
    {R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)", find_all<gpt2_at>},
    // Llama-3 / tiktoken cl100k (transformers' TikTokenConverter default).
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     find_all<llama3_at>},
    // Qwen2 / Qwen2.5 / Qwen3: single digits.
    {R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
     find_all<qwen2_at>},
};

}  // namespace

const char* const kGpt2Pattern = kKnown[0].regex;

SplitMatcher find_split_matcher(const std::string& regex) {
    for (const KnownPattern& k : kKnown)
        if (regex == k.regex) return k.matcher;
    std::string known;
    for (const KnownPattern& k : kKnown) known += std::string(known.empty() ? "" : ", ") + "\"" + k.regex + "\"";
    throw UnsupportedError("pre-tokenizer regex \"" + regex +
                           "\" is not one slmc's native tokenizer implements (known: GPT-2, Llama-3, Qwen2 patterns: " + known + ")");
}

}  // namespace slmc
