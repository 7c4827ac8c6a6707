// A small JSON reader (RFC 8259) for tokenizer.json: values keep object key order; errors name the
// byte offset. No third-party code.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace slmc {

struct Json {
    enum class Kind { Null, Bool, Number, String, Array, Object };
    Kind kind = Kind::Null;
    bool boolean = false;
    double number = 0;
    std::string text;                                  // String: decoded UTF-8
    std::vector<Json> items;                           // Array
    std::vector<std::pair<std::string, Json>> fields;  // Object, in file order

    bool is_null() const { return kind == Kind::Null; }
    // The field `key` of an object, or nullptr (also when this is not an object).
    const Json* get(const std::string& key) const;
};

// Parses a whole document; throws FormatError("<source>: JSON syntax error at byte N: ...").
Json parse_json(const std::string& data, const std::string& source);

}  // namespace slmc
