#include "core/ingest/model_filter.h"

#include "absl/strings/str_cat.h"

namespace kvindex {

absl::StatusOr<ModelFilter> ModelFilter::Create(const std::string& pattern) {
  ModelFilter filter;
  if (pattern.empty()) return filter;
  try {
    filter.regex_ = std::make_shared<const std::regex>(pattern, std::regex::ECMAScript | std::regex::optimize);
  } catch (const std::regex_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("--models=", pattern, ": not a regular expression: ", e.what()));
  }
  filter.pattern_ = pattern;
  return filter;
}

bool ModelFilter::Serves(std::string_view model) const {
  return regex_ == nullptr || std::regex_match(model.begin(), model.end(), *regex_);
}

std::string ModelFilter::Refusal(std::string_view model) const {
  return absl::StrCat("model \"", absl::string_view(model.data(), model.size()),
                      "\" is not served by this replica (--models=", pattern_, ")");
}

}  // namespace kvindex
