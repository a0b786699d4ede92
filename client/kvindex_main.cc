// `kvindex`: the kvindex command-line tool. Each subcommand lives in its own
// file and is registered in kSubcommands below.

#include <iostream>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "client/decode_command.h"
#include "client/match_command.h"
#include "client/pods_command.h"
#include "client/route_command.h"
#include "client/stats_command.h"

namespace kvindex {
namespace {

// A subcommand gets the words after its name; returns the process exit code.
using SubcommandFn = int (*)(std::span<const std::string_view> args, std::ostream& out,
                             std::ostream& err);

struct Subcommand {
  std::string_view name;
  std::string_view summary;
  SubcommandFn run;
};

constexpr Subcommand kSubcommands[] = {
    {"decode", "print engine KV-event payload files (msgpack) as JSON", RunDecodeCommand},
    {"match", "which pods hold the longest cached prefix of a prompt", RunMatchCommand},
    {"pods", "apply a pod snapshot, delete a pod, list pods", RunPodsCommand},
    {"route", "record that a prompt was routed to a pod (speculative entries)", RunRouteCommand},
    {"stats", "the server's totals", RunStatsCommand},
};

void PrintUsage(std::ostream& out) {
  out << "usage: kvindex SUBCOMMAND [ARGS...]\n\nsubcommands:\n";
  for (const Subcommand& c : kSubcommands) {
    out << "  " << c.name << std::string(c.name.size() < 10 ? 10 - c.name.size() : 1, ' ')
        << c.summary << "\n";
  }
  out << "\n'kvindex SUBCOMMAND --help' describes a subcommand.\n";
}

int Main(std::span<const std::string_view> args) {
  if (args.empty()) {
    PrintUsage(std::cerr);
    return 2;
  }
  const std::string_view name = args.front();
  if (name == "--help" || name == "-h" || name == "help") {
    PrintUsage(std::cout);
    return 0;
  }
  for (const Subcommand& c : kSubcommands) {
    if (c.name == name) return c.run(args.subspan(1), std::cout, std::cerr);
  }
  std::cerr << "kvindex: unknown subcommand '" << name << "'\n\n";
  PrintUsage(std::cerr);
  return 2;
}

}  // namespace
}  // namespace kvindex

int main(int argc, char** argv) {
  const std::vector<std::string_view> args(argv + 1, argv + argc);
  return kvindex::Main(args);
}
