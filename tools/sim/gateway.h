#pragma once

// Gateway: kvindex-sim's gateway mode. Routes a bursty workload over the
// simulated engines through a kvindex server, as an LLM gateway would, to show
// what routing hints (RecordRouting) are worth:
//  - the workload is `bursts` bursts of `burst_size` requests, `request_gap`
//    apart, sharing a prefix no engine has seen (a new document, a new
//    agent's system prompt), each with its own tail;
//  - each request is a Match for its prompt; the pod with the best score gets
//    it, or when no pod scores, the one this gateway has sent fewest requests
//    (least loaded); with `hint`, a RecordRouting for the pick follows;
//  - the chosen engine serves the prompt at once, but its KV events reach the
//    wire `event_delay` later (event delivery under load), so a burst's later
//    requests are routed before its first request's blocks are indexed.
// Recomputed prefix tokens, per request: the longest prefix of the prompt any
// engine held at that instant (the ground truth) minus what the chosen engine
// held; what better routing would have saved.
//
// Thread safety: none; one thread runs it, and owns the engines meanwhile
// (it publishes their events and answers their replay requests).

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "client/kvindex_client.h"
#include "nlohmann/json.hpp"
#include "tools/sim/sim_engine.h"

namespace kvindex::sim {

struct GatewayOptions {
  bool hint = false;              // RecordRouting after each pick
  uint32_t bursts = 16;
  uint32_t burst_size = 8;        // requests sharing one new prefix; >= 1
  uint32_t prefix_tokens = 1024;  // the shared prefix
  uint32_t suffix_tokens = 64;    // each request's own tail
  absl::Duration request_gap = absl::Milliseconds(5);   // between a burst's requests
  absl::Duration burst_gap = absl::Milliseconds(200);   // after a burst, before the next
  absl::Duration event_delay = absl::Milliseconds(300); // serving -> events on the wire
  absl::Duration ready_timeout = absl::Seconds(30);     // for the server to follow every engine
  uint32_t vocab_size = 32000;
  uint64_t seed = 1;
  std::string model;              // the engines' served model
  std::string lora_name;
};

struct GatewayReport {
  uint64_t requests = 0;
  uint64_t prompt_tokens = 0;
  uint64_t reusable_tokens = 0;    // the longest prefix some engine held, summed
  uint64_t cached_tokens = 0;      // what the chosen engine held, summed
  uint64_t recomputed_tokens = 0;  // reusable - cached, summed
  uint64_t routed_by_match = 0;    // picks a Match answer made (the rest: least loaded)
  uint64_t hints = 0;              // RecordRouting calls that succeeded
  uint64_t rpc_errors = 0;         // Match or RecordRouting calls that failed (routed least loaded)
  double match_p50_ms = 0, match_p99_ms = 0;
  double hint_p50_ms = 0, hint_p99_ms = 0;

  nlohmann::json ToJson() const;
};

class Gateway {
 public:
  // `client` and the engines must outlive the gateway.
  Gateway(client::KvIndexClient* client, std::vector<SimEngine*> engines, GatewayOptions options);

  // Tells the server about the engines' pods (one SyncPods snapshot of
  // `pods`, a kvindex.v1.PodSnapshot in text format) and waits until it
  // follows every engine (worker state "live"), answering replay meanwhile.
  // DEADLINE_EXCEEDED after ready_timeout, CANCELLED when `stop()` says so.
  [[nodiscard]] absl::Status Connect(const std::string& pods, const std::function<bool()>& stop);

  // Routes the workload, then publishes every event still held. CANCELLED
  // when `stop()` says so midway.
  [[nodiscard]] absl::StatusOr<GatewayReport> Run(const std::function<bool()>& stop);

 private:
  // Publishes the batches due and answers replay requests until `until`.
  [[nodiscard]] absl::Status Pump(absl::Time until);
  // The server's pick for `tokens` (an engine index), or the least loaded.
  size_t Route(const std::vector<uint32_t>& tokens, GatewayReport& report);

  client::KvIndexClient* const client_;
  const std::vector<SimEngine*> engines_;
  const GatewayOptions options_;
  std::vector<std::string> keys_;  // each engine's "namespace/name#rank"
  std::vector<uint64_t> sent_;     // requests sent to each engine
  std::vector<double> match_ms_, hint_ms_;
};

}  // namespace kvindex::sim
