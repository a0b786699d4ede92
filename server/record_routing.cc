#include "server/record_routing.h"

#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "proto/grpc_status.h"
#include "server/prompt_validation.h"

namespace kvindex::server {

grpc::Status AnswerRecordRouting(const v1::RecordRoutingRequest& request, PrefixIndex& index,
                                 const SubscriptionManager& pods, uint32_t max_tokens, const ModelFilter& models,
                                 v1::RecordRoutingResponse* response) {
  if (grpc::Status valid = ValidatePrompt(PromptOf("RecordRouting", request), max_tokens, models); !valid.ok()) {
    return valid;
  }
  // The index's own refusals (empty model, neither or both prompts) come before NOT_FOUND, as in Match.
  if (request.model().empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "model is required");
  if (request.token_ids().empty() == request.block_hashes().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "exactly one of token_ids and block_hashes must be given");
  }
  const std::optional<PodStatus> pod = pods.FindPod(request.pod());
  if (!pod.has_value()) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("no pod \"", request.pod(), "\" is known"));
  }
  const uint32_t dp_size = std::max<uint32_t>(pod->pod.dp_size, 1);
  if (request.dp_rank() >= dp_size) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("pod \"", request.pod(), "\" has no dp rank ",
                                                                  request.dp_rank(), " (dp_size ", dp_size, ")"));
  }
  std::vector<MultimodalInput> mm_inputs;
  mm_inputs.reserve(request.mm_inputs_size());
  for (const v1::MultimodalInput& input : request.mm_inputs()) {
    mm_inputs.push_back({input.identifier(), input.offset(), input.length()});
  }
  RoutingHint hint;
  hint.worker = WorkerKey{request.pod(), request.dp_rank()};
  hint.model = request.model();
  hint.lora_name = request.lora_name();
  hint.token_ids = absl::MakeConstSpan(request.token_ids().data(), request.token_ids().size());
  hint.block_hashes = absl::MakeConstSpan(request.block_hashes().data(), request.block_hashes().size());
  hint.cache_salt = request.cache_salt();
  hint.mm_inputs = mm_inputs;
  if (request.ttl_ms() != 0) {
    hint.ttl = absl::Milliseconds(request.ttl_ms());
  } else if (!pod->subscribed) {
    hint.ttl = absl::InfiniteDuration();  // no KV events: hints are the only signal
  }
  absl::StatusOr<RoutingResult> result = index.RecordRouting(hint);
  if (!result.ok()) return ToGrpcStatus(result.status());
  response->set_blocks(result->blocks);
  response->set_ttl_ms(result->ttl == absl::InfiniteDuration()
                           ? 0
                           : static_cast<uint32_t>(std::min<int64_t>(absl::ToInt64Milliseconds(result->ttl), UINT32_MAX)));
  return grpc::Status::OK;
}

}  // namespace kvindex::server
