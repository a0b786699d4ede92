#pragma once

// ValidatePrompt: the checks Match and RecordRouting make of the prompt a
// request carries (the same fields in both messages), so both refuse alike:
// too many token_ids or block_hashes (--max_match_tokens), cache_salt or
// mm_inputs without token_ids, too many or malformed mm_inputs →
// INVALID_ARGUMENT; a model this replica does not serve (--models) →
// FAILED_PRECONDITION. An empty model and "neither or both of token_ids /
// block_hashes" are the index's own INVALID_ARGUMENT (PrefixIndex::Match,
// RecordRouting). Thread-safe (no state).

#include <cstdint>
#include <string_view>

#include "core/ingest/model_filter.h"
#include "google/protobuf/repeated_field.h"
#include "grpcpp/support/status.h"
#include "kvindex/v1/kvindex.pb.h"

namespace kvindex::server {

// Most mm_inputs in one request (a prompt with more images than this is absurd).
inline constexpr int kMaxMultimodalInputs = 4096;

// The prompt fields of a request; `rpc` names it in messages ("Match").
struct PromptFields {
  const char* rpc = "";
  std::string_view model;
  int token_ids = 0;
  int block_hashes = 0;
  std::string_view cache_salt;
  const google::protobuf::RepeatedPtrField<v1::MultimodalInput>* mm_inputs = nullptr;
};

grpc::Status ValidatePrompt(const PromptFields& prompt, uint32_t max_tokens, const ModelFilter& models);

// The prompt fields of a MatchRequest or RecordRoutingRequest.
template <typename Request>
PromptFields PromptOf(const char* rpc, const Request& request) {
  return PromptFields{rpc, request.model(), request.token_ids_size(), request.block_hashes_size(),
                      request.cache_salt(), &request.mm_inputs()};
}

}  // namespace kvindex::server
