#include "tools/bench/latency_summary.h"

#include <stdlib.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <thread>

#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"

namespace kvindex::bench {

LatencySummary Summarize(std::vector<int64_t>& ns) {
  LatencySummary s;
  if (ns.empty()) return s;
  std::sort(ns.begin(), ns.end());
  s.count = ns.size();
  double sum = 0;
  for (int64_t v : ns) sum += static_cast<double>(v);
  auto rank = [&](double p) {
    size_t i = static_cast<size_t>(std::ceil(p * static_cast<double>(ns.size())));
    i = std::clamp<size_t>(i, 1, ns.size());
    return static_cast<double>(ns[i - 1]) / 1e3;
  };
  s.mean_us = sum / static_cast<double>(ns.size()) / 1e3;
  s.min_us = static_cast<double>(ns.front()) / 1e3;
  s.p50_us = rank(0.50);
  s.p90_us = rank(0.90);
  s.p99_us = rank(0.99);
  s.p999_us = rank(0.999);
  s.max_us = static_cast<double>(ns.back()) / 1e3;
  return s;
}

nlohmann::json ToJson(const LatencySummary& s) {
  return {{"count", s.count},   {"mean_us", s.mean_us}, {"min_us", s.min_us},   {"p50_us", s.p50_us},
          {"p90_us", s.p90_us}, {"p99_us", s.p99_us},   {"p999_us", s.p999_us}, {"max_us", s.max_us}};
}

MachineInfo ReadMachineInfo() {
  MachineInfo m;
  m.nproc = std::thread::hardware_concurrency();
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);) {
    if (absl::StartsWith(line, "model name")) {
      const size_t colon = line.find(':');
      if (colon != std::string::npos) m.cpu_model = std::string(absl::StripAsciiWhitespace(line.substr(colon + 1)));
      break;
    }
  }
  if (getloadavg(m.loadavg, 3) != 3) m.loadavg[0] = m.loadavg[1] = m.loadavg[2] = -1;
  utsname u{};
  if (uname(&u) == 0) {
    m.kernel = absl::StrFormat("%s %s %s", u.sysname, u.release, u.machine);
    m.hostname = u.nodename;
  }
  return m;
}

nlohmann::json ToJson(const MachineInfo& m) {
  return {{"nproc", m.nproc},
          {"cpu_model", m.cpu_model},
          {"loadavg", {m.loadavg[0], m.loadavg[1], m.loadavg[2]}},
          {"kernel", m.kernel},
          {"hostname", m.hostname}};
}

std::string LoadAverageText(const MachineInfo& m) {
  return absl::StrFormat("%.2f %.2f %.2f", m.loadavg[0], m.loadavg[1], m.loadavg[2]);
}

}  // namespace kvindex::bench
