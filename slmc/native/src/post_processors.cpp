// Post-processors (single sequence, add_special_tokens=True): ByteLevel (ids unchanged),
// TemplateProcessing, RobertaProcessing/BertProcessing (cls + ids + sep), Sequence.

#include "components.hpp"
#include "errors.hpp"

namespace slmc {
namespace {

struct Identity : PostProcessor {
    std::vector<int32_t> process(std::vector<int32_t> ids) const override { return ids; }
};

// A list of pieces: special-token id lists, or the sequence itself (empty optional).
struct Template : PostProcessor {
    std::vector<std::pair<bool, std::vector<int32_t>>> parts;  // (is_sequence, special ids)
    std::vector<int32_t> process(std::vector<int32_t> ids) const override {
        std::vector<int32_t> out;
        for (const auto& p : parts) {
            if (p.first) out.insert(out.end(), ids.begin(), ids.end());
            else out.insert(out.end(), p.second.begin(), p.second.end());
        }
        return out;
    }
};

struct Sequence : PostProcessor {
    std::vector<std::unique_ptr<PostProcessor>> steps;
    std::vector<int32_t> process(std::vector<int32_t> ids) const override {
        for (const auto& s : steps) ids = s->process(std::move(ids));
        return ids;
    }
};

std::unique_ptr<PostProcessor> template_processing(const Json& j, const BuildContext& c, const std::string& w) {
    auto t = std::make_unique<Template>();
    const Json& single = field(j, "single", c, w);
    const Json& specials = field(j, "special_tokens", c, w);
    if (single.kind != Json::Kind::Array) throw FormatError(c.source + ": " + w + ".single: expected a list");
    for (size_t i = 0; i < single.items.size(); ++i) {
        const Json& piece = single.items[i];
        std::string at = w + ".single[" + std::to_string(i) + "]";
        if (piece.get("Sequence")) {
            t->parts.push_back({true, {}});
        } else if (const Json* sp = piece.get("SpecialToken")) {
            std::string name = string_field(*sp, "id", c, at + ".SpecialToken");
            const Json* entry = specials.get(name);
            if (!entry) throw FormatError(c.source + ": " + w + ".special_tokens: missing \"" + name + "\" used by " + at);
            const Json& ids = field(*entry, "ids", c, w + ".special_tokens." + name);
            std::vector<int32_t> v;
            for (const Json& id : ids.items) v.push_back(int32_t(id.number));
            t->parts.push_back({false, v});
        } else {
            throw FormatError(c.source + ": " + at + ": expected {\"Sequence\": ...} or {\"SpecialToken\": ...}");
        }
    }
    return t;
}

std::unique_ptr<PostProcessor> cls_sep(const Json& j, const BuildContext& c, const std::string& w) {
    auto t = std::make_unique<Template>();
    auto id_of = [&](const char* key) {
        const Json& pair = field(j, key, c, w);
        if (pair.kind != Json::Kind::Array || pair.items.size() != 2)
            throw FormatError(c.source + ": " + w + "." + key + ": expected [token, id]");
        return std::vector<int32_t>{int32_t(pair.items[1].number)};
    };
    t->parts = {{false, id_of("cls")}, {true, {}}, {false, id_of("sep")}};
    return t;
}

const ComponentRegistry<PostProcessor>& registry() {
    static const ComponentRegistry<PostProcessor> r = {
        {"ByteLevel", [](const Json&, const BuildContext&, const std::string&) { return std::unique_ptr<PostProcessor>(new Identity); }},
        {"TemplateProcessing", template_processing},
        {"RobertaProcessing", cls_sep},
        {"BertProcessing", cls_sep},
        {"Sequence", sequence_factory<PostProcessor, Sequence>("processors", build_post_processor)},
    };
    return r;
}

}  // namespace

std::unique_ptr<PostProcessor> build_post_processor(const Json& j, const BuildContext& ctx, const std::string& where) {
    return build_component(registry(), "post-processor", j, ctx, where);
}

}  // namespace slmc
