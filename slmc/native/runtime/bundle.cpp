// bundle.json through the project's JSON reader; each listed file hashed as it is read (sha256_file:
// no file's pages become resident in the process for the check).
#include "bundle.hpp"

#include <sys/stat.h>

#include "../src/errors.hpp"
#include "../src/json.hpp"
#include "../src/read_file.hpp"
#include "json_reader.hpp"
#include "manifest.hpp"
#include "sha256.hpp"

namespace slmc {

size_t verify_bundle(const std::string& bundle_dir) {
    std::string path = bundle_dir + "/bundle.json";
    Json root = parse_json(read_file(path), path);
    if (root.kind != Json::Kind::Object) throw FormatError(path + ": expected a JSON object");
    JsonReader r{path};
    int64_t version = r.integer(r.field(root, "", "format_version"), "format_version");
    if (version != kBundleFormatVersion)
        throw FormatError(path + ": unsupported bundle format_version " + std::to_string(version) + ", expected " +
                          std::to_string(kBundleFormatVersion));
    std::map<std::string, FileEntry> files = read_file_entries(root, r);
    for (const auto& [name, entry] : files) {
        std::string file = bundle_dir + "/" + name;
        struct stat st;
        if (::stat(file.c_str(), &st) != 0) throw IntegrityError(file + ": missing (listed in " + path + ")");
        if (static_cast<uint64_t>(st.st_size) != entry.size)
            throw IntegrityError(file + ": size " + std::to_string(st.st_size) + " bytes, bundle.json says " +
                                 std::to_string(entry.size) + "; refusing to run a damaged bundle");
        if (sha256_file(file) != entry.sha256)
            throw IntegrityError(file + ": sha256 differs from bundle.json (the file is corrupted or was modified); "
                                 "refusing to run a damaged bundle");
    }
    return files.size();
}

}  // namespace slmc
