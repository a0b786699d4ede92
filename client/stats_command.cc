#include "client/stats_command.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "client/cli_args.h"
#include "client/cli_output.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/reflection.h"

namespace kvindex {
namespace {

constexpr std::string_view kUsage =
    "usage: kvindex stats [connection flags]\n"
    "  The server's totals: pods, workers, blocks, entries, memory, events, decode errors, matches.\n";

// Every field of the response, in declaration order, so that fields added to
// the proto show up without touching this command.
void PrintStats(const v1::GetStatsResponse& stats, std::ostream& out) {
  const google::protobuf::Descriptor* descriptor = stats.GetDescriptor();
  const google::protobuf::Reflection* reflection = stats.GetReflection();
  cli::Table table({"STAT", "VALUE"});
  for (int i = 0; i < descriptor->field_count(); ++i) {
    const google::protobuf::FieldDescriptor* field = descriptor->field(i);
    std::string value;
    switch (field->cpp_type()) {
      case google::protobuf::FieldDescriptor::CPPTYPE_UINT64:
        value = absl::StrCat(reflection->GetUInt64(stats, field));
        break;
      case google::protobuf::FieldDescriptor::CPPTYPE_DOUBLE:
        value = absl::StrCat(reflection->GetDouble(stats, field));
        break;
      default:
        continue;  // only numbers today
    }
    table.AddRow({field->name(), value});
  }
  table.Print(out);
}

}  // namespace

int RunStatsCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<cli::CliArgs> parsed = cli::ParseWithConnectionFlags(args, {}, {});
  if (!parsed.ok() || !parsed->positional().empty()) {
    err << "kvindex stats: " << (parsed.ok() ? "unexpected argument" : parsed.status().message()) << "\n"
        << kUsage << cli::kConnectionUsage;
    return 2;
  }
  if (parsed->Has("--help") || parsed->Has("-h")) {
    out << kUsage << cli::kConnectionUsage;
    return 0;
  }
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = cli::ConnectFromArgs(*parsed);
  if (!client.ok()) return cli::ReportUsageError("stats", client.status(), err);
  absl::StatusOr<v1::GetStatsResponse> stats = (*client)->GetStats();
  if (!stats.ok()) return cli::ReportError("stats", stats.status(), err);
  if (parsed->Has("--json")) {
    cli::PrintJson(*stats, out);
  } else {
    PrintStats(*stats, out);
  }
  return 0;
}

}  // namespace kvindex
