#include "server/proto_convert.h"

#include <utility>

namespace kvindex::server {

Pod PodFromProto(const v1::Pod& proto) {
  Pod pod;
  pod.ns = proto.namespace_();
  pod.name = proto.name();
  pod.ip = proto.ip();
  pod.phase = proto.phase();
  pod.labels.insert(proto.labels().begin(), proto.labels().end());
  pod.annotations.insert(proto.annotations().begin(), proto.annotations().end());
  pod.model = proto.model();
  pod.lora_name = proto.lora_name();
  if (proto.has_kv_events_enabled()) pod.kv_events_enabled = proto.kv_events_enabled();
  if (proto.has_engine_connects()) pod.engine_connects = proto.engine_connects();
  pod.events_port = proto.events_port();
  if (proto.has_replay_port()) pod.replay_port = proto.replay_port();
  pod.dp_size = proto.dp_size();
  pod.topic = proto.topic();
  return pod;
}

v1::Pod PodToProto(const Pod& pod) {
  v1::Pod proto;
  proto.set_namespace_(pod.ns);
  proto.set_name(pod.name);
  proto.set_ip(pod.ip);
  proto.set_phase(pod.phase);
  proto.mutable_labels()->insert(pod.labels.begin(), pod.labels.end());
  proto.mutable_annotations()->insert(pod.annotations.begin(), pod.annotations.end());
  proto.set_model(pod.model);
  proto.set_lora_name(pod.lora_name);
  if (pod.kv_events_enabled.has_value()) proto.set_kv_events_enabled(*pod.kv_events_enabled);
  if (pod.engine_connects.has_value()) proto.set_engine_connects(*pod.engine_connects);
  proto.set_events_port(pod.events_port);
  if (pod.replay_port.has_value()) proto.set_replay_port(*pod.replay_port);
  proto.set_dp_size(pod.dp_size);
  proto.set_topic(pod.topic);
  return proto;
}

v1::PodOutcome PodOutcomeToProto(PodOutcome outcome) {
  switch (outcome) {
    case PodOutcome::kSubscribed: return v1::POD_OUTCOME_SUBSCRIBED;
    case PodOutcome::kUpdated: return v1::POD_OUTCOME_UPDATED;
    case PodOutcome::kRemoved: return v1::POD_OUTCOME_REMOVED;
    case PodOutcome::kIgnored: return v1::POD_OUTCOME_IGNORED;
    case PodOutcome::kRejected: return v1::POD_OUTCOME_REJECTED;
    case PodOutcome::kRemovalPending: return v1::POD_OUTCOME_REMOVAL_PENDING;
  }
  return v1::POD_OUTCOME_UNSPECIFIED;
}

v1::PodAck PodAckToProto(const PodAck& ack) {
  v1::PodAck proto;
  proto.set_pod(ack.pod);
  proto.set_outcome(PodOutcomeToProto(ack.outcome));
  proto.set_reason(ack.reason);
  return proto;
}

MatchQuery MatchQueryFromProto(const v1::MatchRequest& request, MatchQueryStorage* storage) {
  storage->pods.assign(request.pods().begin(), request.pods().end());
  storage->mm_inputs.clear();
  for (const v1::MultimodalInput& input : request.mm_inputs()) {
    storage->mm_inputs.push_back({input.identifier(), input.offset(), input.length()});
  }
  MatchQuery query;
  query.model = request.model();
  query.lora_name = request.lora_name();
  query.token_ids = absl::MakeConstSpan(request.token_ids().data(), request.token_ids().size());
  query.block_hashes = absl::MakeConstSpan(request.block_hashes().data(), request.block_hashes().size());
  query.pods = absl::MakeConstSpan(storage->pods);
  query.cache_salt = request.cache_salt();
  query.mm_inputs = absl::MakeConstSpan(storage->mm_inputs);
  query.medium_weights.insert(request.medium_weights().begin(), request.medium_weights().end());
  return query;
}

void MatchResultToProto(const MatchResult& result, v1::MatchResponse* proto) {
  proto->set_block_size(result.block_size);
  proto->set_query_blocks(result.query_blocks);
  proto->mutable_pods()->Reserve(static_cast<int>(result.workers.size()));
  for (const WorkerMatch& match : result.workers) {
    v1::PodMatch* pod = proto->add_pods();
    pod->set_pod(match.worker.pod);
    pod->set_dp_rank(match.worker.dp_rank);
    pod->set_matched_blocks(match.matched_blocks);
    pod->set_matched_tokens(match.matched_tokens);
    pod->mutable_blocks_by_medium()->insert(match.blocks_by_medium.begin(), match.blocks_by_medium.end());
    pod->set_score(match.score);
  }
}

v1::WorkerInfo WorkerInfoToProto(const WorkerStatus& status, const std::optional<WorkerStats>& stats) {
  v1::WorkerInfo proto;
  proto.set_dp_rank(status.dp_rank);
  proto.set_state(std::string(WorkerStateName(status.state)));
  proto.set_last_seq(status.last_seq);
  proto.set_last_event_time(status.last_event_ts);
  proto.set_history_complete(status.history_complete);
#define KVINDEX_SET_WORKER_COUNTER(name, help) proto.set_##name(status.name);
  KVINDEX_WORKER_COUNTERS(KVINDEX_SET_WORKER_COUNTER)
#undef KVINDEX_SET_WORKER_COUNTER
  if (stats.has_value()) {
    proto.set_blocks(stats->blocks);
    proto.mutable_blocks_by_medium()->insert(stats->blocks_by_medium.begin(), stats->blocks_by_medium.end());
    proto.set_evictions(stats->evictions);
    proto.set_unresolved_parents(stats->unresolved_parents);
    proto.set_speculative_entries(stats->speculative_entries);
    proto.set_speculative_ttl_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(stats->speculative_ttl)));
    for (const GroupStats& g : stats->groups) {
      v1::KvCacheGroup* group = proto.add_groups();
      group->set_group_idx(g.group_idx);
      group->set_kind(g.kind);
      group->set_sliding_window(g.sliding_window);
      group->set_block_size(g.block_size);
      group->set_blocks(g.blocks);
    }
  }
  return proto;
}

v1::PodInfo PodInfoToProto(const PodStatus& status) {
  v1::PodInfo proto;
  *proto.mutable_pod() = PodToProto(status.pod);
  proto.set_key(PodKey(status.pod));
  proto.set_subscribable(status.plan.subscribable);
  proto.set_reason(status.plan.reason);
  proto.set_model(status.plan.model);
  proto.set_lora_name(status.plan.default_lora);
  proto.set_subscribed(status.subscribed);
  return proto;
}

}  // namespace kvindex::server
