#include <cmath>

#include "components.hpp"
#include "errors.hpp"

namespace slmc {

const Json& field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where) {
    const Json* v = obj.get(key);
    if (!v) throw FormatError(ctx.source + ": " + where + ": missing field \"" + key + "\"");
    return *v;
}

std::string string_field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where) {
    const Json& v = field(obj, key, ctx, where);
    if (v.kind != Json::Kind::String) throw FormatError(ctx.source + ": " + where + "." + key + ": expected a string");
    return v.text;
}

bool bool_field(const Json& obj, const std::string& key, bool fallback, const BuildContext& ctx, const std::string& where) {
    const Json* v = obj.get(key);
    if (!v || v->is_null()) return fallback;
    if (v->kind != Json::Kind::Bool) throw FormatError(ctx.source + ": " + where + "." + key + ": expected true or false");
    return v->boolean;
}

long int_field(const Json& obj, const std::string& key, const BuildContext& ctx, const std::string& where) {
    const Json& v = field(obj, key, ctx, where);
    if (v.kind != Json::Kind::Number || v.number != std::floor(v.number))
        throw FormatError(ctx.source + ": " + where + "." + key + ": expected an integer");
    return long(v.number);
}

std::string type_of(const Json& obj, const BuildContext& ctx, const std::string& where) {
    if (obj.kind != Json::Kind::Object) throw FormatError(ctx.source + ": " + where + ": expected an object or null");
    return string_field(obj, "type", ctx, where);
}

}  // namespace slmc
