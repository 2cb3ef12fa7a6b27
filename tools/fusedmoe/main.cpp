// The `fusedmoe` command: parse, then hand over to one subcommand.
#include <cstdio>
#include <exception>
#include <new>

#include "args.hpp"
#include "cases.hpp"
#include "commands.hpp"
#include "fusedmoe_bench/run_info.hpp"

int main(int argc, char** argv) {
  using namespace fusedmoe::cli;
  const ParseResult parsed = parse_args(argc, argv);
  if (!parsed.ok()) {
    std::fprintf(stderr, "fusedmoe: %s\n", parsed.error.c_str());
    return kExitUsage;
  }
  const Options& o = *parsed.options;
  if (o.command == Command::version) {
    std::printf("fusedmoe %s (commit %s)\n", std::string(fusedmoe::bench::build_version()).c_str(),
                std::string(fusedmoe::bench::build_commit()).c_str());
    return kExitOk;
  }
  if (o.help || o.command == Command::help) {
    std::fputs(help_text(o.command).c_str(), stdout);
    return kExitOk;
  }
  // The library reports its errors as statuses; what is left is the allocator giving up on a
  // buffer of this tool's own, which is still an error message, not a crash.
  try {
    const std::string line = fusedmoe::bench::command_line(argc, argv);
    switch (o.command) {
      case Command::run:
        return run_command(o, line);
      case Command::verify:
        return verify_command(o);
      case Command::bench:
        return bench_command(o, line);
      case Command::presets:
        return presets_command();
      case Command::help:
      case Command::version:
        break;
    }
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fusedmoe: out of memory\n");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fusedmoe: %s\n", e.what());
  }
  return kExitFailure;
}
