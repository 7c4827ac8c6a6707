// Normalizers: NFC, NFD, Prepend, Replace (string pattern), Sequence.
#include <functional>
#include <map>

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

using Factory = std::function<std::unique_ptr<Normalizer>(const Json&, const BuildContext&, const std::string&)>;

const std::map<std::string, Factory>& registry() {
    static const std::map<std::string, Factory> r = {
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
        {"Sequence",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto n = std::make_unique<Sequence>();
             const Json& list = field(j, "normalizers", c, w);
             if (list.kind != Json::Kind::Array) throw FormatError(c.source + ": " + w + ".normalizers: expected a list");
             for (size_t i = 0; i < list.items.size(); ++i) {
                 auto step = build_normalizer(list.items[i], c, w + ".normalizers[" + std::to_string(i) + "]");
                 if (step) n->steps.push_back(std::move(step));
             }
             return std::unique_ptr<Normalizer>(std::move(n));
         }},
    };
    return r;
}

}  // namespace

std::unique_ptr<Normalizer> build_normalizer(const Json& j, const BuildContext& ctx, const std::string& where) {
    if (j.is_null()) return nullptr;
    std::string type = type_of(j, ctx, where);
    auto it = registry().find(type);
    if (it == registry().end()) {
        std::string known;
        for (const auto& kv : registry()) known += (known.empty() ? "" : ", ") + kv.first;
        throw UnsupportedError(ctx.source + ": " + where + ": normalizer type \"" + type + "\" is not supported (supported: " + known + ")");
    }
    return it->second(j, ctx, where);
}

}  // namespace slmc
