#include "server/metrics_registry.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <utility>

#include "absl/strings/str_cat.h"

namespace kvindex {
namespace {

// A misuse of the registry by kvindex's own code: fail loudly and at once.
[[noreturn]] void Die(const std::string& message) {
  std::fprintf(stderr, "metrics registry: %s\n", message.c_str());
  std::abort();
}

bool ValidName(std::string_view name, bool allow_colon) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (allow_colon && c == ':');
    const bool digit = c >= '0' && c <= '9';
    if (!alpha && !(digit && i > 0)) return false;
  }
  return true;
}

std::string EscapeHelp(std::string_view help) {
  std::string out;
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// `a="x",b="y"` for the given names and values (no braces).
std::string LabelPairs(const std::vector<std::string>& names, const std::vector<std::string>& values) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) {
    absl::StrAppend(&out, i == 0 ? "" : ",", names[i], "=\"", EscapeLabelValue(values[i]), "\"");
  }
  return out;
}

void AppendSample(std::string& out, std::string_view name, std::string_view pairs, std::string_view value) {
  out.append(name);
  if (!pairs.empty()) out.append("{").append(pairs).append("}");
  out.append(" ").append(value).append("\n");
}

}  // namespace

std::string FormatMetricValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  // Shortest round trip; below 1 in %g style ("0.0001", "5e-05") as Go's
  // clients print bounds, from 1 up without an exponent while that is shorter.
  char buffer[64];
  const std::to_chars_result result =
      std::fabs(value) < 1 ? std::to_chars(buffer, buffer + sizeof(buffer), value, std::chars_format::general)
                           : std::to_chars(buffer, buffer + sizeof(buffer), value);
  return std::string(buffer, result.ptr);
}

std::string EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string_view MetricTypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

void Counter::AdvanceTo(uint64_t total) {
  uint64_t current = value_.load(std::memory_order_relaxed);
  while (current < total && !value_.compare_exchange_weak(current, total, std::memory_order_relaxed)) {
  }
}

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), buckets_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  for (size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && bounds_[i] <= bounds_[i - 1])) {
      Die("histogram bounds must be finite and strictly increasing");
    }
  }
  for (size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  // NaN compares false with everything: it lands in +Inf.
  const size_t bucket = std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin();
  buckets_[std::isnan(value) ? bounds_.size() : bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Get() const {
  Snapshot s;
  s.bounds = bounds_;
  s.cumulative.reserve(bounds_.size() + 1);
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    s.count += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(s.count);
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

MetricFamilyBase::MetricFamilyBase(std::string name, std::string help, MetricType type,
                                   std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), type_(type), label_names_(std::move(label_names)) {
  if (!ValidName(name_, /*allow_colon=*/true)) Die(absl::StrCat("invalid metric name \"", name_, "\""));
  for (const std::string& label : label_names_) {
    if (!ValidName(label, /*allow_colon=*/false) || label.rfind("__", 0) == 0 ||
        (type_ == MetricType::kHistogram && label == "le")) {
      Die(absl::StrCat("metric ", name_, ": invalid label name \"", label, "\""));
    }
  }
}

void MetricFamilyBase::CheckArity(size_t values) const {
  if (values != label_names_.size()) {
    Die(absl::StrCat("metric ", name_, " has ", label_names_.size(), " labels, got ", values, " values"));
  }
}

void MetricFamilyBase::Render(std::string& out) const {
  absl::StrAppend(&out, "# HELP ", name_, " ", EscapeHelp(help_), "\n# TYPE ", name_, " ");
  out.append(MetricTypeName(type_)).append("\n");
  RenderChildren(out);
}

template <>
void MetricFamily<Counter>::RenderChildren(std::string& out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    AppendSample(out, name_, LabelPairs(label_names_, values), absl::StrCat(child->Value()));
  }
}

template <>
void MetricFamily<Gauge>::RenderChildren(std::string& out) const {
  absl::MutexLock lock(&mu_);
  for (const auto& [values, child] : children_) {
    AppendSample(out, name_, LabelPairs(label_names_, values), FormatMetricValue(child->Value()));
  }
}

template <>
void MetricFamily<Histogram>::RenderChildren(std::string& out) const {
  absl::MutexLock lock(&mu_);
  const std::string bucket = absl::StrCat(name_, "_bucket");
  for (const auto& [values, child] : children_) {
    const Histogram::Snapshot s = child->Get();
    const std::string pairs = LabelPairs(label_names_, values);
    const std::string prefix = pairs.empty() ? "" : absl::StrCat(pairs, ",");
    for (size_t i = 0; i < s.bounds.size(); ++i) {
      AppendSample(out, bucket, absl::StrCat(prefix, "le=\"", FormatMetricValue(s.bounds[i]), "\""),
                   absl::StrCat(s.cumulative[i]));
    }
    AppendSample(out, bucket, absl::StrCat(prefix, "le=\"+Inf\""), absl::StrCat(s.count));
    AppendSample(out, absl::StrCat(name_, "_sum"), pairs, FormatMetricValue(s.sum));
    AppendSample(out, absl::StrCat(name_, "_count"), pairs, absl::StrCat(s.count));
  }
}

void MetricsRegistry::Add(std::unique_ptr<MetricFamilyBase> family) {
  const std::string name = family->name();
  if (!families_.emplace(name, std::move(family)).second) Die(absl::StrCat("metric ", name, " registered twice"));
}

CounterFamily& MetricsRegistry::AddCounter(std::string name, std::string help, std::vector<std::string> label_names) {
  auto family = std::make_unique<CounterFamily>(std::move(name), std::move(help), MetricType::kCounter,
                                                std::move(label_names), [] { return std::make_unique<Counter>(); });
  CounterFamily& out = *family;
  absl::MutexLock lock(&mu_);
  Add(std::move(family));
  return out;
}

GaugeFamily& MetricsRegistry::AddGauge(std::string name, std::string help, std::vector<std::string> label_names) {
  auto family = std::make_unique<GaugeFamily>(std::move(name), std::move(help), MetricType::kGauge,
                                              std::move(label_names), [] { return std::make_unique<Gauge>(); });
  GaugeFamily& out = *family;
  absl::MutexLock lock(&mu_);
  Add(std::move(family));
  return out;
}

HistogramFamily& MetricsRegistry::AddHistogram(std::string name, std::string help, std::vector<double> bounds,
                                               std::vector<std::string> label_names) {
  Histogram check(bounds);  // dies on bad bounds at registration, not on first use
  auto family = std::make_unique<HistogramFamily>(
      std::move(name), std::move(help), MetricType::kHistogram, std::move(label_names),
      [bounds = std::move(bounds)] { return std::make_unique<Histogram>(bounds); });
  HistogramFamily& out = *family;
  absl::MutexLock lock(&mu_);
  Add(std::move(family));
  return out;
}

void MetricsRegistry::AddCollector(std::function<void()> collect) {
  absl::MutexLock lock(&mu_);
  collectors_.push_back(std::move(collect));
}

std::string MetricsRegistry::Render() const {
  absl::MutexLock lock(&mu_);
  for (const auto& collect : collectors_) collect();
  std::string out;
  for (const auto& [name, family] : families_) family->Render(out);
  return out;
}

}  // namespace kvindex
