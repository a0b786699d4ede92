#pragma once

// ModelFilter: the models one replica serves, when an index too large for one
// machine is sharded by model (--models=REGEX): the replica follows only the
// pods whose model the filter accepts, and answers Match only for those.
//
// Thread safety: immutable after Create; Serves may be called from any thread.

#include <memory>
#include <regex>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"

namespace kvindex {

class ModelFilter {
 public:
  // Every model.
  ModelFilter() = default;

  // The models the whole of `pattern` (ECMAScript syntax) matches; empty: every
  // model. INVALID_ARGUMENT naming the flag when the pattern does not compile.
  [[nodiscard]] static absl::StatusOr<ModelFilter> Create(const std::string& pattern);

  // Whether this replica serves `model`.
  bool Serves(std::string_view model) const;

  bool serves_all() const { return regex_ == nullptr; }
  const std::string& pattern() const { return pattern_; }

  // Why a model is not served: `model "m" is not served by this replica (--models=<pattern>)`.
  std::string Refusal(std::string_view model) const;

 private:
  std::string pattern_;
  std::shared_ptr<const std::regex> regex_;  // null: every model
};

}  // namespace kvindex
