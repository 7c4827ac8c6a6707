// Typed failures of the native runtime; the C API maps each to an SLMC_E_* code and its message.
#pragma once

#include <stdexcept>
#include <string>

namespace slmc {

struct IoError : std::runtime_error { using std::runtime_error::runtime_error; };
struct FormatError : std::runtime_error { using std::runtime_error::runtime_error; };
struct UnsupportedError : std::runtime_error { using std::runtime_error::runtime_error; };

}  // namespace slmc

namespace slmc {

// TVM failed to load or run model.so (its message is kept).
struct ModelError : std::runtime_error { using std::runtime_error::runtime_error; };

}  // namespace slmc

namespace slmc {

// An artifact file whose size or sha256 differs from the manifest.
struct IntegrityError : std::runtime_error { using std::runtime_error::runtime_error; };

}  // namespace slmc
