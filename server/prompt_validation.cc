#include "server/prompt_validation.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace kvindex::server {
namespace {

grpc::Status Refuse(std::string message) { return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message)); }

}  // namespace

grpc::Status ValidatePrompt(const PromptFields& p, uint32_t max_tokens, const ModelFilter& models) {
  if (static_cast<uint64_t>(p.token_ids) > max_tokens) {
    return Refuse(absl::StrCat(p.rpc, " carries ", p.token_ids, " token_ids; the limit is ", max_tokens,
                               " (--max_match_tokens)"));
  }
  if (static_cast<uint64_t>(p.block_hashes) > max_tokens) {
    return Refuse(absl::StrCat(p.rpc, " carries ", p.block_hashes, " block_hashes; the limit is ", max_tokens,
                               " (--max_match_tokens)"));
  }
  const int mm_inputs = p.mm_inputs == nullptr ? 0 : p.mm_inputs->size();
  if (mm_inputs != 0 || !p.cache_salt.empty()) {
    if (p.token_ids == 0) {
      return Refuse("cache_salt and mm_inputs go with token_ids (block_hashes already include them)");
    }
    if (mm_inputs > kMaxMultimodalInputs) {
      return Refuse(absl::StrCat(p.rpc, " carries ", mm_inputs, " mm_inputs; the limit is ", kMaxMultimodalInputs));
    }
    for (int i = 0; i < mm_inputs; ++i) {
      const v1::MultimodalInput& input = p.mm_inputs->Get(i);
      if (input.identifier().empty() || input.length() == 0) {
        return Refuse(absl::StrCat("mm_inputs[", i, "] needs an identifier and a length of at least 1"));
      }
    }
  }
  if (!p.model.empty() && !models.Serves(p.model)) {
    // A gateway that routed this model here would otherwise see "no pod holds it".
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, models.Refusal(p.model));
  }
  return grpc::Status::OK;
}

}  // namespace kvindex::server
