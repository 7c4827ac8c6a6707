// Normalizers: NFC, NFD, Prepend, Replace (string pattern), Sequence.

#include "components.hpp"
#include "errors.hpp"
#include "unicode.hpp"
#include "utf8.hpp"

namespace slmc {
namespace {

struct Nfc : Normalizer {
    std::u32string normalize(const std::u32string& t) const override { return nfc(t); }
};
struct Nfd : Normalizer {
    std::u32string normalize(const std::u32string& t) const override { return nfd(t); }
};

struct Prepend : Normalizer {
    std::u32string prefix;
    std::u32string normalize(const std::u32string& t) const override { return t.empty() ? t : prefix + t; }
};

std::u32string replace_all(const std::u32string& t, const std::u32string& pattern, const std::u32string& content) {
    if (pattern.empty()) return t;
    std::u32string out;
    size_t i = 0;
    for (size_t at; (at = t.find(pattern, i)) != std::u32string::npos; i = at + pattern.size()) {
        out.append(t, i, at - i);
        out += content;
    }
    out.append(t, i, std::u32string::npos);
    return out;
}

struct Replace : Normalizer {
    std::u32string pattern, content;
    std::u32string normalize(const std::u32string& t) const override { return replace_all(t, pattern, content); }
};

struct Sequence : Normalizer {
    std::vector<std::unique_ptr<Normalizer>> steps;
    std::u32string normalize(const std::u32string& t) const override {
        std::u32string out = t;
        for (const auto& s : steps) out = s->normalize(out);
        return out;
    }
};

std::u32string u32(const std::string& s) { return decode_utf8_replace(s.data(), s.size()); }

const ComponentRegistry<Normalizer>& registry() {
    static const ComponentRegistry<Normalizer> r = {
        {"NFC", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<Normalizer>(new Nfc); }},
        {"NFD", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<Normalizer>(new Nfd); }},
        {"Prepend",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto n = std::make_unique<Prepend>();
             n->prefix = u32(string_field(j, "prepend", c, w));
             return std::unique_ptr<Normalizer>(std::move(n));
         }},
        {"Replace",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto n = std::make_unique<Replace>();
             const Json& p = field(j, "pattern", c, w);
             if (!p.get("String"))
                 throw UnsupportedError(c.source + ": " + w + ".pattern: only {\"String\": ...} patterns are supported, not regexes");
             n->pattern = u32(string_field(p, "String", c, w + ".pattern"));
             n->content = u32(string_field(j, "content", c, w));
             return std::unique_ptr<Normalizer>(std::move(n));
         }},
        {"Sequence", sequence_factory<Normalizer, Sequence>("normalizers", build_normalizer)},
    };
    return r;
}

}  // namespace

std::unique_ptr<Normalizer> build_normalizer(const Json& j, const BuildContext& ctx, const std::string& where) {
    return build_component(registry(), "normalizer", j, ctx, where);
}

}  // namespace slmc
