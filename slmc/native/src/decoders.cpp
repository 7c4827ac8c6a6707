// Decoders: ByteLevel, ByteFallback, Fuse, Strip, Replace (string pattern), Metaspace, Sequence.

#include "byte_level.hpp"
#include "components.hpp"
#include "errors.hpp"
#include "utf8.hpp"

namespace slmc {
namespace {

std::u32string u32(const std::string& s) { return decode_utf8_replace(s.data(), s.size()); }

struct ByteLevel : Decoder {
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::string bytes;
        for (const std::string& t : tokens) {
            std::string mapped;
            bool all = true;
            for (char32_t c : u32(t)) {
                int b = char_to_byte(c);
                if (b < 0) { all = false; break; }
                mapped.push_back(char(b));
            }
            bytes += all ? mapped : t;  // a token that is not byte-level text (an added token) as is
        }
        return {utf8_lossy(bytes)};
    }
};

int byte_token(const std::string& t) {  // "<0xAB>" -> 0xAB, else -1
    if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
    int v = 0;
    for (int k = 3; k < 5; ++k) {
        char h = t[size_t(k)];
        v <<= 4;
        if (h >= '0' && h <= '9') v |= h - '0';
        else if (h >= 'a' && h <= 'f') v |= h - 'a' + 10;
        else if (h >= 'A' && h <= 'F') v |= h - 'A' + 10;
        else return -1;
    }
    return v;
}

struct ByteFallback : Decoder {
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::vector<std::string> out;
        std::string pending;
        auto flush = [&] {
            if (pending.empty()) return;
            if (is_valid_utf8(pending)) out.push_back(pending);
            else
                for (size_t k = 0; k < pending.size(); ++k) out.push_back("\xEF\xBF\xBD");  // one U+FFFD per byte, as HF
            pending.clear();
        };
        for (std::string& t : tokens) {
            int b = byte_token(t);
            if (b >= 0) { pending.push_back(char(b)); continue; }
            flush();
            out.push_back(std::move(t));
        }
        flush();
        return out;
    }
};

struct Fuse : Decoder {
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        std::string all;
        for (const auto& t : tokens) all += t;
        return {all};
    }
};

struct Strip : Decoder {
    char32_t content = U' ';
    size_t start = 0, stop = 0;
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (std::string& t : tokens) {
            std::u32string c = u32(t);
            size_t b = 0, e = c.size();
            for (size_t i = 0; i < start && i < c.size() && c[i] == content; ++i) b = i + 1;
            for (size_t i = 0; i < stop && i < c.size(); ++i) {
                size_t idx = c.size() - i - 1;
                if (c[idx] != content) break;
                e = idx;
            }
            t = b < e ? encode_utf8(c.substr(b, e - b)) : std::string();
        }
        return tokens;
    }
};

struct Replace : Decoder {
    std::string pattern, content;
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        if (pattern.empty()) return tokens;
        for (std::string& t : tokens) {
            std::string out;
            size_t i = 0;
            for (size_t at; (at = t.find(pattern, i)) != std::string::npos; i = at + pattern.size()) {
                out.append(t, i, at - i);
                out += content;
            }
            out.append(t, i, std::string::npos);
            t = out;
        }
        return tokens;
    }
};

struct Metaspace : Decoder {
    char32_t replacement = 0x2581;
    bool prepend = true;  // prepend_scheme != never
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (size_t i = 0; i < tokens.size(); ++i) {
            std::u32string out;
            for (char32_t c : u32(tokens[i])) {
                if (c != replacement) out.push_back(c);
                else if (!(i == 0 && prepend)) out.push_back(U' ');
            }
            tokens[i] = encode_utf8(out);
        }
        return tokens;
    }
};

struct Sequence : Decoder {
    std::vector<std::unique_ptr<Decoder>> steps;
    std::vector<std::string> decode_chain(std::vector<std::string> tokens) const override {
        for (const auto& s : steps) tokens = s->decode_chain(std::move(tokens));
        return tokens;
    }
};

char32_t one_char(const std::string& s, const BuildContext& c, const std::string& w) {
    std::u32string u = u32(s);
    if (u.size() != 1) throw FormatError(c.source + ": " + w + ": expected one character");
    return u[0];
}

const ComponentRegistry<Decoder>& registry() {
    static const ComponentRegistry<Decoder> r = {
        {"ByteLevel", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<Decoder>(new ByteLevel); }},
        {"ByteFallback", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<Decoder>(new ByteFallback); }},
        {"Fuse", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<Decoder>(new Fuse); }},
        {"Strip",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto d = std::make_unique<Strip>();
             d->content = one_char(string_field(j, "content", c, w), c, w + ".content");
             d->start = size_t(int_field(j, "start", c, w));
             d->stop = size_t(int_field(j, "stop", c, w));
             return std::unique_ptr<Decoder>(std::move(d));
         }},
        {"Replace",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto d = std::make_unique<Replace>();
             const Json& p = field(j, "pattern", c, w);
             if (!p.get("String"))
                 throw UnsupportedError(c.source + ": " + w + ".pattern: only {\"String\": ...} patterns are supported, not regexes");
             d->pattern = string_field(p, "String", c, w + ".pattern");
             d->content = string_field(j, "content", c, w);
             return std::unique_ptr<Decoder>(std::move(d));
         }},
        {"Metaspace",
         [](const Json& j, const BuildContext& c, const std::string& w) {
             auto d = std::make_unique<Metaspace>();
             d->replacement = one_char(string_field(j, "replacement", c, w), c, w + ".replacement");
             const Json* scheme = j.get("prepend_scheme");
             if (scheme && !scheme->is_null()) d->prepend = string_field(j, "prepend_scheme", c, w) != "never";
             else d->prepend = bool_field(j, "add_prefix_space", true, c, w);
             return std::unique_ptr<Decoder>(std::move(d));
         }},
        {"Sequence", sequence_factory<Decoder, Sequence>("decoders", build_decoder)},
    };
    return r;
}

}  // namespace

std::unique_ptr<Decoder> build_decoder(const Json& j, const BuildContext& ctx, const std::string& where) {
    return build_component(registry(), "decoder", j, ctx, where);
}

}  // namespace slmc
