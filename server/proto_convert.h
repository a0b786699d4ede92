#pragma once

// Conversions between kvindex.v1 protobuf messages and core types. Pure
// functions: no I/O, no index logic, no validation beyond what a type needs.

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/index/prefix_index.h"
#include "core/ingest/pod.h"
#include "core/ingest/subscription_manager.h"
#include "kvindex/v1/kvindex.pb.h"

namespace kvindex::server {

// v1.Pod -> Pod and back; every field carried over, optionals kept unset when unset.
Pod PodFromProto(const v1::Pod& proto);
v1::Pod PodToProto(const Pod& pod);

v1::PodOutcome PodOutcomeToProto(PodOutcome outcome);
v1::PodAck PodAckToProto(const PodAck& ack);

// What a MatchQuery converted from a request points into besides the request.
struct MatchQueryStorage {
  std::vector<std::string> pods;
  std::vector<MultimodalInput> mm_inputs;
};

// A MatchQuery whose spans point into `request` (token_ids, block_hashes,
// cache_salt) and `storage` (which receives copies of request.pods() and
// mm_inputs); both must outlive it.
MatchQuery MatchQueryFromProto(const v1::MatchRequest& request, MatchQueryStorage* storage);

void MatchResultToProto(const MatchResult& result, v1::MatchResponse* proto);

// One worker of ListPods: its subscription status and, when the index knows
// it, what the index holds for it.
v1::WorkerInfo WorkerInfoToProto(const WorkerStatus& status, const std::optional<WorkerStats>& stats);

// One pod of ListPods, without its workers (see WorkerInfoToProto).
v1::PodInfo PodInfoToProto(const PodStatus& status);

}  // namespace kvindex::server
