// Typed reads of a JSON document's fields (manifest.json, bundle.json) by name: every missing or
// mistyped field is a FormatError naming the file and the field's dotted path.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "../src/errors.hpp"
#include "../src/json.hpp"

namespace slmc {

struct JsonReader {
    const std::string& source;

    [[noreturn]] void bad(const std::string& field, const std::string& expected) const {
        throw FormatError(source + ": field '" + field + "': expected " + expected);
    }
    const Json& field(const Json& obj, const std::string& parent, const std::string& key) const {
        const Json* v = obj.get(key);
        std::string name = parent.empty() ? key : parent + "." + key;
        if (!v) bad(name, "to be present");
        return *v;
    }
    const Json& object(const Json& obj, const std::string& parent, const std::string& key) const {
        const Json& v = field(obj, parent, key);
        if (v.kind != Json::Kind::Object) bad(parent.empty() ? key : parent + "." + key, "an object");
        return v;
    }
    int64_t integer(const Json& v, const std::string& name) const {
        if (v.kind != Json::Kind::Number || std::floor(v.number) != v.number) bad(name, "an integer");
        return static_cast<int64_t>(v.number);
    }
    int64_t positive(const Json& obj, const std::string& parent, const std::string& key) const {
        int64_t n = integer(field(obj, parent, key), parent + "." + key);
        if (n < 1) bad(parent + "." + key, "a positive integer");
        return n;
    }
    bool flag(const Json& v, const std::string& name) const {
        if (v.kind != Json::Kind::Bool) bad(name, "true or false");
        return v.boolean;
    }
    std::string text(const Json& v, const std::string& name) const {
        if (v.kind != Json::Kind::String) bad(name, "a string");
        return v.text;
    }
};


}  // namespace slmc
