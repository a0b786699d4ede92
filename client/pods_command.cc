#include "client/pods_command.h"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/cli_args.h"
#include "client/cli_output.h"
#include "proto/text_proto.h"

namespace kvindex {
namespace {

constexpr std::string_view kUsage =
    "usage: kvindex pods apply -f SNAPSHOT.textproto [connection flags]\n"
    "       kvindex pods delete NAMESPACE/NAME [connection flags]\n"
    "       kvindex pods list [connection flags]\n"
    "  apply:  replaces the server's pods with a kvindex.v1.PodSnapshot in protobuf text format\n"
    "          ('-' reads stdin); pods missing from it are removed. A pod is followed only with the\n"
    "          label model.aibrix.ai/kv-events-enabled: \"true\" (or kv_events_enabled: true), phase\n"
    "          Running, an IP and a model; the last line sums up subscribed / updated / ignored (with\n"
    "          reasons) / rejected. Exit 1 if any pod is rejected, 2 if the file cannot be read or parsed.\n"
    "  delete: forgets one pod and drops its blocks.\n"
    "  list:   every known pod, one row per (pod, dp rank).\n";

std::string OutcomeName(v1::PodOutcome outcome) {
  std::string name = v1::PodOutcome_Name(outcome);
  constexpr std::string_view kPrefix = "POD_OUTCOME_";
  if (name.rfind(kPrefix, 0) == 0) name = name.substr(kPrefix.size());
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return name;
}

// The last line of `pods apply`: "summary: 1 subscribed, 0 updated, 2 ignored
// (kv events not enabled (...): 2), 1 rejected" and, when pods were removed,
// ", 3 removed" (", 1 removal_pending"). A pod is followed only when subscribed
// or updated; the reasons say why the others are not.
std::string Summary(const v1::PodUpdateAck& ack) {
  size_t subscribed = 0, updated = 0, rejected = 0, removed = 0, pending = 0;
  std::vector<std::pair<std::string, size_t>> ignored;  // by reason, in first-seen order
  size_t ignored_total = 0;
  for (const v1::PodAck& pod : ack.pods()) {
    switch (pod.outcome()) {
      case v1::POD_OUTCOME_SUBSCRIBED: ++subscribed; break;
      case v1::POD_OUTCOME_UPDATED: ++updated; break;
      case v1::POD_OUTCOME_REJECTED: ++rejected; break;
      case v1::POD_OUTCOME_REMOVED: ++removed; break;
      case v1::POD_OUTCOME_REMOVAL_PENDING: ++pending; break;
      case v1::POD_OUTCOME_IGNORED: {
        ++ignored_total;
        auto it = std::find_if(ignored.begin(), ignored.end(), [&](const auto& r) { return r.first == pod.reason(); });
        if (it == ignored.end()) {
          ignored.emplace_back(pod.reason(), 1);
        } else {
          ++it->second;
        }
        break;
      }
      default: break;
    }
  }
  std::string line = absl::StrCat("summary: ", subscribed, " subscribed, ", updated, " updated, ", ignored_total,
                                  " ignored");
  if (!ignored.empty()) {
    std::vector<std::string> reasons;
    for (const auto& [reason, n] : ignored) reasons.push_back(absl::StrCat(reason.empty() ? "no reason" : reason, ": ", n));
    absl::StrAppend(&line, " (", absl::StrJoin(reasons, "; "), ")");
  }
  absl::StrAppend(&line, ", ", rejected, " rejected");
  if (removed > 0) absl::StrAppend(&line, ", ", removed, " removed");
  if (pending > 0) absl::StrAppend(&line, ", ", pending, " removal_pending");
  return line;
}

// Prints the acks and returns the exit code: 1 when anything was rejected.
int PrintAcks(const v1::PodUpdateAck& ack, bool json, std::ostream& out) {
  bool rejected = ack.outcome() == v1::POD_OUTCOME_REJECTED;
  for (const v1::PodAck& pod : ack.pods()) rejected |= pod.outcome() == v1::POD_OUTCOME_REJECTED;
  if (json) {
    cli::PrintJson(ack, out);
    return rejected ? 1 : 0;
  }
  cli::Table table({"POD", "OUTCOME", "REASON"});
  if (ack.pods_size() == 0) table.AddRow({ack.pod(), OutcomeName(ack.outcome()), ack.reason()});
  for (const v1::PodAck& pod : ack.pods()) table.AddRow({pod.pod(), OutcomeName(pod.outcome()), pod.reason()});
  table.Print(out);
  if (ack.pods_size() > 0) {
    out << Summary(ack) << "\n";
  } else if (ack.pod().empty()) {
    out << ack.reason() << "\n";
  }
  return rejected ? 1 : 0;
}

std::string Age(double last_event_time) {
  if (last_event_time <= 0) return "-";
  const double age = absl::ToDoubleSeconds(absl::Now() - absl::UnixEpoch()) - last_event_time;
  return absl::StrFormat("%.1fs ago", age < 0 ? 0 : age);
}

void PrintPods(const v1::ListPodsResponse& response, std::ostream& out) {
  if (response.pods_size() == 0) {
    out << "no pods\n";
    return;
  }
  cli::Table table({"POD", "MODEL", "RANK", "STATE", "LAST_SEQ", "EVENTS", "GAPS", "REPLAYS", "RESTARTS",
                    "BLOCKS", "LAST_EVENT"});
  for (const v1::PodInfo& pod : response.pods()) {
    const std::string model = pod.lora_name().empty() ? pod.model() : absl::StrCat(pod.model(), "+", pod.lora_name());
    if (!pod.subscribed() || pod.workers_size() == 0) {
      const std::string state = pod.subscribable() ? "not subscribed" : absl::StrCat("ignored: ", pod.reason());
      table.AddRow({pod.key(), model, "-", state});
      continue;
    }
    for (const v1::WorkerInfo& w : pod.workers()) {
      table.AddRow({pod.key(), model, absl::StrCat(w.dp_rank()), w.state(), absl::StrCat(w.last_seq()),
                    absl::StrCat(w.events()), absl::StrCat(w.gaps()),
                    absl::StrCat(w.replays_ok(), "/", w.replays_ok() + w.replays_failed()), absl::StrCat(w.restarts()),
                    absl::StrCat(w.blocks()), Age(w.last_event_time())});
    }
  }
  table.Print(out);
}


}  // namespace

int RunPodsCommand(std::span<const std::string_view> args, std::ostream& out, std::ostream& err) {
  absl::StatusOr<cli::CliArgs> parsed = cli::ParseWithConnectionFlags(args, {"-f", "--file"}, {});
  if (!parsed.ok()) {
    err << "kvindex pods: " << parsed.status().message() << "\n" << kUsage << cli::kConnectionUsage;
    return 2;
  }
  if (parsed->Has("--help") || parsed->Has("-h")) {
    out << kUsage << cli::kConnectionUsage;
    return 0;
  }
  const std::vector<std::string>& words = parsed->positional();
  auto usage_error = [&err](absl::string_view message) {
    err << "kvindex pods: " << message << "\n" << kUsage;
    return 2;
  };
  if (words.empty()) return usage_error("missing action: apply, delete or list");
  const std::string& action = words[0];
  const std::optional<std::string> file = parsed->Get("-f").has_value() ? parsed->Get("-f") : parsed->Get("--file");

  v1::PodUpdate update;
  if (action == "apply") {
    if (!file.has_value() || words.size() != 1) return usage_error("apply takes -f SNAPSHOT.textproto");
    absl::StatusOr<std::string> text = cli::ReadInputFile(*file);
    if (!text.ok()) return cli::ReportUsageError("pods apply", text.status(), err);
    if (absl::Status status = ParseTextProto(*text, update.mutable_snapshot()); !status.ok()) {
      err << "kvindex pods apply: " << *file << ": " << status.message() << "\n";
      return 2;
    }
  } else if (action == "delete") {
    if (words.size() != 2 || file.has_value()) return usage_error("delete takes one NAMESPACE/NAME");
    update.set_delete_(words[1]);
  } else if (action == "list") {
    if (words.size() != 1 || file.has_value()) return usage_error("list takes no arguments");
  } else {
    return usage_error(absl::StrCat("unknown action '", action, "'"));
  }

  const std::string command = absl::StrCat("pods ", action);
  absl::StatusOr<std::unique_ptr<client::KvIndexClient>> client = cli::ConnectFromArgs(*parsed);
  if (!client.ok()) return cli::ReportUsageError(command, client.status(), err);
  if (action == "list") {
    absl::StatusOr<v1::ListPodsResponse> response = (*client)->ListPods();
    if (!response.ok()) return cli::ReportError(command, response.status(), err);
    if (parsed->Has("--json")) {
      cli::PrintJson(*response, out);
    } else {
      PrintPods(*response, out);
    }
    return 0;
  }
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = (*client)->SyncPods({update});
  if (!acks.ok()) return cli::ReportError(command, acks.status(), err);
  return PrintAcks(acks->front(), parsed->Has("--json"), out);
}

}  // namespace kvindex
