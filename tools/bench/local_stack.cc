#include "tools/bench/local_stack.h"

#include <sys/stat.h>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "core/util/read_file.h"
#include "proto/text_proto.h"

namespace kvindex::bench {

namespace {

// The port after `marker` in `log`, 0 when not (yet) there.
int PortAfter(const std::string& log, std::string_view marker) {
  const size_t at = log.find(marker);
  if (at == std::string::npos) return 0;
  const size_t start = at + marker.size();
  const size_t end = log.find_first_not_of("0123456789", start);
  int port = 0;
  if (end == std::string::npos || !absl::SimpleAtoi(log.substr(start, end - start), &port)) return 0;
  return port;
}

}  // namespace

absl::StatusOr<ServerChild> StartServer(const std::string& bin_dir, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {bin_dir + "/kvindex-server", "--listen=127.0.0.1:0",
                                   "--metrics_listen=127.0.0.1:0"};
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start("server", std::move(argv));
  if (!process.ok()) return process.status();
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    // main() logs the gRPC port, then the metrics one (or that there is none).
    const std::string log = (*process)->Log();
    const int port = PortAfter(log, "listening on 127.0.0.1:");
    const int metrics_port = PortAfter(log, "metrics on http://127.0.0.1:");
    if (port > 0 && (metrics_port > 0 || log.find("metrics endpoint disabled") != std::string::npos)) {
      return ServerChild{*std::move(process), absl::StrCat("127.0.0.1:", port),
                         metrics_port > 0 ? absl::StrCat("127.0.0.1:", metrics_port) : ""};
    }
    if ((*process)->Wait(absl::ZeroDuration()).has_value()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return absl::UnavailableError(absl::StrCat("kvindex-server did not come up; its log:\n", (*process)->Log()));
}

bool WaitForFile(const std::string& path, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    struct stat st {};
    if (stat(path.c_str(), &st) == 0 && st.st_size > 0) return true;
    if (absl::Now() >= deadline) return false;
    absl::SleepFor(absl::Milliseconds(5));
  }
}

absl::StatusOr<SimChild> StartSim(const std::string& bin_dir, const std::string& dir, const std::string& name,
                                  const std::vector<std::string>& args, bool prompts) {
  SimChild sim;
  sim.pods_file = absl::StrCat(dir, "/", name, "-pods.textproto");
  std::vector<std::string> argv = {bin_dir + "/kvindex-sim", "--base_port=0", "--pods_file=" + sim.pods_file};
  if (prompts) {
    sim.prompts_file = absl::StrCat(dir, "/", name, "-prompts.json");
    argv.push_back("--prompts_file=" + sim.prompts_file);
  }
  argv.insert(argv.end(), args.begin(), args.end());
  absl::StatusOr<std::unique_ptr<ChildProcess>> process = ChildProcess::Start(name, std::move(argv));
  if (!process.ok()) return process.status();
  sim.process = *std::move(process);
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (!WaitForFile(sim.pods_file, absl::Milliseconds(20))) {
    if (sim.process->Wait(absl::ZeroDuration()).has_value() || absl::Now() >= deadline) {
      return absl::UnavailableError(
          absl::StrCat("kvindex-sim did not write ", sim.pods_file, "; its log:\n", sim.process->Log()));
    }
  }
  return sim;
}

absl::StatusOr<v1::PodSnapshot> ReadPodSnapshot(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFileToString(path);
  if (!text.ok()) return text.status();
  v1::PodSnapshot snapshot;
  if (absl::Status s = ParseTextProto(*text, &snapshot); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", s.message()));
  }
  return snapshot;
}

absl::Status ApplySnapshot(client::KvIndexClient& client, const v1::PodSnapshot& snapshot) {
  v1::PodUpdate update;
  *update.mutable_snapshot() = snapshot;
  absl::StatusOr<std::vector<v1::PodUpdateAck>> acks = client.SyncPods({update});
  if (!acks.ok()) return acks.status();
  for (const v1::PodUpdateAck& ack : *acks) {
    for (const v1::PodAck& pod : ack.pods()) {
      if (pod.outcome() == v1::POD_OUTCOME_REJECTED) {
        return absl::FailedPreconditionError(absl::StrCat("pod ", pod.pod(), " rejected: ", pod.reason()));
      }
    }
    if (ack.outcome() == v1::POD_OUTCOME_REJECTED) {
      return absl::FailedPreconditionError(absl::StrCat("snapshot rejected: ", ack.reason()));
    }
  }
  return absl::OkStatus();
}

absl::Status WaitForWorkersLive(client::KvIndexClient& client, const std::vector<std::string>& pod_keys,
                                absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  const absl::flat_hash_set<std::string> wanted(pod_keys.begin(), pod_keys.end());
  std::vector<std::string> waiting;
  while (true) {
    waiting.clear();
    absl::StatusOr<v1::ListPodsResponse> pods = client.ListPods();
    if (!pods.ok()) return pods.status();
    absl::flat_hash_set<std::string> seen;
    for (const v1::PodInfo& pod : pods->pods()) {
      if (!wanted.contains(pod.key())) continue;
      seen.insert(pod.key());
      bool live = pod.workers_size() > 0;
      for (const v1::WorkerInfo& w : pod.workers()) live = live && w.last_seq() >= 0;
      if (!live) waiting.push_back(pod.key());
    }
    for (const std::string& key : pod_keys) {
      if (!seen.contains(key)) waiting.push_back(key);
    }
    if (waiting.empty()) return absl::OkStatus();
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrCat("no batch applied yet from ", absl::StrJoin(waiting, ", ")));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
}

std::vector<std::string> SplitArgs(const std::string& text) {
  return absl::StrSplit(text, absl::ByAnyChar(" \t\n"), absl::SkipEmpty());
}

}  // namespace kvindex::bench
