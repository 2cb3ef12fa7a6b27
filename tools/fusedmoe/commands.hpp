// The subcommands of `fusedmoe`. Each returns the process exit status (cases.hpp: kExit*).
#pragma once

#include <string>

#include "args.hpp"

namespace fusedmoe::cli {

// `command_line`: the whole invocation, for the JSON results.
int run_command(const Options& options, const std::string& command_line);
int verify_command(const Options& options);
int bench_command(const Options& options, const std::string& command_line);
int presets_command();

}  // namespace fusedmoe::cli
