#pragma once

// AnswerRecordRouting: kvindex.v1.KvIndex.RecordRouting, adapted: the prompt
// checked as Match's (prompt_validation.h), the pod and rank looked up among
// the known pods (NOT_FOUND otherwise), the TTL chosen, and the hint handed to
// PrefixIndex::RecordRouting.
//
// TTL: ttl_ms when given; else, for a pod whose KV events are followed
// (subscribed), the worker's adaptive TTL; for a pod that is known but not
// subscribed (KV events disabled, not subscribable, or --kv_event_sync=false)
// none: hints are its only signal and stay until the cap
// (--max_speculative_entries) evicts them, least recently routed first
// (ttl_ms 0 in the answer).
//
// Thread-safe: may be called from any thread (the index and the manager are).

#include <cstdint>

#include "core/index/prefix_index.h"
#include "core/ingest/model_filter.h"
#include "core/ingest/subscription_manager.h"
#include "grpcpp/support/status.h"
#include "kvindex/v1/kvindex.pb.h"

namespace kvindex::server {

grpc::Status AnswerRecordRouting(const v1::RecordRoutingRequest& request, PrefixIndex& index,
                                 const SubscriptionManager& pods, uint32_t max_tokens, const ModelFilter& models,
                                 v1::RecordRoutingResponse* response);

}  // namespace kvindex::server
