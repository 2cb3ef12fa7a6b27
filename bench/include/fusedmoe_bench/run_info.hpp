// Where a result came from: the build (commit, version), when it ran, and the command that ran it.
#pragma once

#include <string>
#include <string_view>

namespace fusedmoe::bench {

// `git rev-parse --short HEAD` at configure time, "unknown" when git could not tell.
std::string_view build_commit();
// The project version, "0.1.0".
std::string_view build_version();
// Now, as UTC ISO-8601 to the second: "2026-11-29T08:30:00Z".
std::string utc_now_iso8601();
// The arguments joined by spaces, each quoted for a POSIX shell where it needs it, so the line
// can be pasted back to rerun the measurement.
std::string command_line(int argc, const char* const* argv);

}  // namespace fusedmoe::bench
