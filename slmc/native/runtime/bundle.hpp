// The deploy bundle's own check: every file bundle.json lists (written by `slmc package`,
// slmc/artifact/bundle.py) has its size and sha256.
#pragma once

#include <cstddef>
#include <string>

namespace slmc {

// bundle.json's format_version this runtime reads (slmc.artifact.bundle.BUNDLE_FORMAT_VERSION).
constexpr int kBundleFormatVersion = 1;

// Checks `<bundle_dir>/bundle.json` and every file it lists; returns how many files were checked.
// Throws IoError (bundle.json missing), FormatError (malformed, another format_version) or
// IntegrityError naming the first file that is missing, of another size or another sha256.
size_t verify_bundle(const std::string& bundle_dir);

}  // namespace slmc
