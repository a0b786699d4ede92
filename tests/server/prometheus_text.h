#pragma once

// A strict parser of the Prometheus text exposition format (0.0.4) for tests:
// it checks what a scraper relies on and returns the samples.
//  - every line is "# HELP name text", "# TYPE name type", another comment,
//    blank, or a sample `name{label="value",...} value [timestamp]` with valid
//    names, escapes (\\, \", \n only) and a Go-parsable float value;
//  - a TYPE comes at most once per family and before its samples, and the
//    samples of a family are contiguous; no series appears twice;
//  - counters are >= 0; a histogram's buckets carry `le`, are cumulative
//    (non-decreasing by le), end with le="+Inf", which equals _count, and
//    _sum/_count are present for each label set.

#include <map>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvindex::testing {

struct PrometheusScrape {
  // Family name -> type ("counter", "gauge", "histogram", "summary", "untyped").
  std::map<std::string, std::string> types;
  // Series `name{a="x",b="y"}` (labels sorted by name; no braces without labels) -> value.
  std::map<std::string, double> samples;

  // The value of `series` (same spelling as the keys); nullopt when absent.
  std::optional<double> Get(const std::string& series) const;
  // Sum over the series of `name` whose labels include every one of `labels`
  // (e.g. `type="block_stored"`; empty: all of them).
  double Sum(absl::string_view name, absl::string_view labels = "") const;
};

// INVALID_ARGUMENT naming the line and what is wrong when `text` is not valid.
absl::StatusOr<PrometheusScrape> ParsePrometheusText(absl::string_view text);

}  // namespace kvindex::testing
