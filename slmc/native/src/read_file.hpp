// Reads a whole file; a name ending in ".gz" is gunzipped when the build has zlib (SLMC_WITH_ZLIB).
#pragma once

#include <string>

namespace slmc {

std::string read_file(const std::string& path);
bool gzip_supported();

}  // namespace slmc
