#pragma once

// LatencySummary: count, mean and percentiles of recorded latencies, and
// MachineInfo: what the reports say about the machine they ran on.

#include <cstdint>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"

namespace kvindex::bench {

struct LatencySummary {
  uint64_t count = 0;
  double mean_us = 0, min_us = 0, p50_us = 0, p90_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

// Summarizes `ns` (nanoseconds; sorted in place). Percentile p is the sample
// at rank ceil(p * count) (nearest rank). All zero when empty.
LatencySummary Summarize(std::vector<int64_t>& ns);

// {"count", "mean_us", "min_us", "p50_us", "p90_us", "p99_us", "p999_us", "max_us"}.
nlohmann::json ToJson(const LatencySummary& s);

struct MachineInfo {
  unsigned nproc = 0;
  std::string cpu_model;
  double loadavg[3] = {0, 0, 0};
  std::string kernel;
  std::string hostname;
};

// nproc, /proc/cpuinfo's model name, /proc/loadavg, uname.
MachineInfo ReadMachineInfo();

// {"nproc", "cpu_model", "loadavg": [1, 5, 15 min], "kernel", "hostname"}.
nlohmann::json ToJson(const MachineInfo& m);

// "1.23 1.10 0.98".
std::string LoadAverageText(const MachineInfo& m);

}  // namespace kvindex::bench
