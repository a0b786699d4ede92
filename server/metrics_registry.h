#pragma once

// MetricsRegistry: counters, gauges and histograms with labels, rendered in the
// Prometheus text exposition format (version 0.0.4). Pure C++: no HTTP, no gRPC.
//
// A family has a name, a help line, a type and label names. Its children, one
// per tuple of label values, are created on first use and live as long as the
// registry, so a component resolves the children it updates once and then
// updates them with relaxed atomics only (no lock, no allocation).
//
// Thread safety: every call may be made from any thread. Child updates are
// lock-free; child creation takes the family's mutex; Render() runs the
// collectors and reads every family under the registry's mutex.

#include <atomic>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace kvindex {

// A count that only goes up.
class Counter {
 public:
  void Increment(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  // Raises the value to `total` when that is higher (never lowers it): for
  // counters mirrored at scrape time from another monotonic source.
  void AdvanceTo(uint64_t total);
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted in buckets by upper bound (Prometheus "le"), plus their sum.
class Histogram {
 public:
  // `bounds`: finite, strictly increasing upper bounds; +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);

  // Counts `value` in the first bucket whose bound is >= value (NaN: +Inf).
  void Observe(double value);

  struct Snapshot {
    std::vector<double> bounds;
    std::vector<uint64_t> cumulative;  // per bound, then +Inf (== count)
    uint64_t count = 0;
    double sum = 0;
  };
  Snapshot Get() const;

 private:
  const std::vector<double> bounds_;
  const std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0};
};

enum class MetricType { kCounter, kGauge, kHistogram };

// Lower-case Prometheus type name: "counter", "gauge", "histogram".
std::string_view MetricTypeName(MetricType type);

// What every family shares; rendering is per type.
class MetricFamilyBase {
 public:
  MetricFamilyBase(std::string name, std::string help, MetricType type, std::vector<std::string> label_names);
  virtual ~MetricFamilyBase() = default;
  MetricFamilyBase(const MetricFamilyBase&) = delete;
  MetricFamilyBase& operator=(const MetricFamilyBase&) = delete;

  const std::string& name() const { return name_; }
  MetricType type() const { return type_; }
  const std::vector<std::string>& label_names() const { return label_names_; }

  // Appends "# HELP", "# TYPE" and one sample line per child (children ordered
  // by label values) to `out`.
  void Render(std::string& out) const;

 protected:
  // Appends the sample lines of every child, ordered by label values.
  virtual void RenderChildren(std::string& out) const = 0;
  // Checks `values` has one value per label name; aborts the process otherwise
  // (a programming error).
  void CheckArity(size_t values) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

// A family of T (Counter, Gauge or Histogram) children keyed by label values.
template <typename T>
class MetricFamily final : public MetricFamilyBase {
 public:
  MetricFamily(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
               std::function<std::unique_ptr<T>()> make)
      : MetricFamilyBase(std::move(name), std::move(help), type, std::move(label_names)), make_(std::move(make)) {
    if (label_names_.empty()) Get({});  // rendered (as 0) from registration on
  }

  // The child for `values`, one per label name in order; created on first
  // use. The reference stays valid as long as the registry.
  T& Get(std::initializer_list<std::string_view> values) ABSL_LOCKS_EXCLUDED(mu_) {
    CheckArity(values.size());
    std::vector<std::string> key(values.begin(), values.end());
    absl::MutexLock lock(&mu_);
    std::unique_ptr<T>& child = children_[std::move(key)];
    if (child == nullptr) child = make_();
    return *child;
  }

  // Calls fn(label values, child) for every child, ordered by label values.
  void ForEach(const std::function<void(const std::vector<std::string>&, T&)>& fn) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    for (auto& [values, child] : children_) fn(values, *child);
  }

 private:
  void RenderChildren(std::string& out) const override ABSL_LOCKS_EXCLUDED(mu_);

  const std::function<std::unique_ptr<T>()> make_;
  mutable absl::Mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> children_ ABSL_GUARDED_BY(mu_);
};

// Rendering per child type, defined in metrics_registry.cc.
template <>
void MetricFamily<Counter>::RenderChildren(std::string& out) const;
template <>
void MetricFamily<Gauge>::RenderChildren(std::string& out) const;
template <>
void MetricFamily<Histogram>::RenderChildren(std::string& out) const;

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a family. Names must be valid Prometheus metric names and
  // unique, label names valid: anything else aborts (a programming error).
  // The family lives as long as the registry.
  CounterFamily& AddCounter(std::string name, std::string help, std::vector<std::string> label_names = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  GaugeFamily& AddGauge(std::string name, std::string help, std::vector<std::string> label_names = {})
      ABSL_LOCKS_EXCLUDED(mu_);
  HistogramFamily& AddHistogram(std::string name, std::string help, std::vector<double> bounds,
                                std::vector<std::string> label_names = {}) ABSL_LOCKS_EXCLUDED(mu_);

  // `collect` runs at the start of every Render(), one Render at a time, to
  // refresh values pulled from elsewhere (gauges of current state).
  void AddCollector(std::function<void()> collect) ABSL_LOCKS_EXCLUDED(mu_);

  // Every family, ordered by name, in the Prometheus text format.
  std::string Render() const ABSL_LOCKS_EXCLUDED(mu_);

 private:
  void Add(std::unique_ptr<MetricFamilyBase> family) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<MetricFamilyBase>, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  std::vector<std::function<void()>> collectors_ ABSL_GUARDED_BY(mu_);
};

// Prometheus text helpers (exposed for tests).
// A sample value: shortest round-trip decimal, "+Inf", "-Inf" or "NaN".
std::string FormatMetricValue(double value);
// A label value with \, " and newline escaped.
std::string EscapeLabelValue(std::string_view value);

}  // namespace kvindex
