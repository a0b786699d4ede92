#include "tests/server/prometheus_text.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <optional>
#include <set>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace kvindex::testing {
namespace {

bool NameChar(char c, bool first, bool colon) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (colon && c == ':') ||
         (!first && c >= '0' && c <= '9');
}

// Reads a name at `pos`; empty when there is none.
std::string ReadName(absl::string_view line, size_t& pos, bool colon) {
  const size_t start = pos;
  while (pos < line.size() && NameChar(line[pos], pos == start, colon)) ++pos;
  return std::string(line.substr(start, pos - start));
}

bool ValidName(absl::string_view name, bool colon) {
  size_t pos = 0;
  return !name.empty() && ReadName(name, pos, colon).size() == name.size();
}

// Go's ParseFloat as Prometheus accepts it.
std::optional<double> ParseValue(absl::string_view text) {
  if (text == "NaN") return std::nan("");
  if (text == "+Inf" || text == "Inf") return INFINITY;
  if (text == "-Inf") return -INFINITY;
  if (text.empty()) return std::nullopt;
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size() || errno == ERANGE) return std::nullopt;
  // strtod also takes "nan", "inf", hex floats: not Prometheus.
  if (absl::StrContains(absl::AsciiStrToLower(s), "n") || absl::StrContains(absl::AsciiStrToLower(s), "x")) {
    return std::nullopt;
  }
  return v;
}

struct Sample {
  std::string name;
  std::vector<std::pair<std::string, std::string>> labels;  // as written
  double value = 0;
};

absl::StatusOr<Sample> ParseSample(absl::string_view line) {
  Sample sample;
  size_t pos = 0;
  sample.name = ReadName(line, pos, /*colon=*/true);
  if (sample.name.empty()) return absl::InvalidArgumentError("no metric name");
  if (pos < line.size() && line[pos] == '{') {
    ++pos;
    while (true) {
      if (pos < line.size() && line[pos] == '}') {
        ++pos;
        break;
      }
      std::string label = ReadName(line, pos, /*colon=*/false);
      if (label.empty()) return absl::InvalidArgumentError("bad label name");
      if (pos + 1 >= line.size() || line[pos] != '=' || line[pos + 1] != '"') {
        return absl::InvalidArgumentError(absl::StrCat("label ", label, ": expected =\""));
      }
      pos += 2;
      std::string value;
      bool closed = false;
      while (pos < line.size()) {
        const char c = line[pos++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (pos >= line.size()) return absl::InvalidArgumentError("dangling backslash");
          const char e = line[pos++];
          if (e == 'n') {
            value += '\n';
          } else if (e == '\\' || e == '"') {
            value += e;
          } else {
            return absl::InvalidArgumentError(absl::StrCat("bad escape \\", std::string(1, e)));
          }
          continue;
        }
        value += c;
      }
      if (!closed) return absl::InvalidArgumentError("unterminated label value");
      for (const auto& [name, unused] : sample.labels) {
        if (name == label) return absl::InvalidArgumentError(absl::StrCat("label ", label, " twice"));
      }
      sample.labels.emplace_back(std::move(label), std::move(value));
      if (pos < line.size() && line[pos] == ',') {
        ++pos;
      } else if (pos >= line.size() || line[pos] != '}') {
        return absl::InvalidArgumentError("expected , or } after a label");
      }
    }
  }
  if (pos >= line.size() || line[pos] != ' ') return absl::InvalidArgumentError("expected a space before the value");
  std::vector<absl::string_view> rest = absl::StrSplit(line.substr(pos + 1), ' ');
  if (rest.empty() || rest.size() > 2) return absl::InvalidArgumentError("expected value [timestamp]");
  std::optional<double> value = ParseValue(rest[0]);
  if (!value.has_value()) return absl::InvalidArgumentError(absl::StrCat("bad value \"", rest[0], "\""));
  int64_t timestamp = 0;
  if (rest.size() == 2 && !absl::SimpleAtoi(rest[1], &timestamp)) {
    return absl::InvalidArgumentError("bad timestamp");
  }
  sample.value = *value;
  return sample;
}

std::string SeriesKey(const std::string& name, std::vector<std::pair<std::string, std::string>> labels) {
  if (labels.empty()) return name;
  std::sort(labels.begin(), labels.end());
  std::vector<std::string> pairs;
  for (const auto& [k, v] : labels) {
    std::string escaped;
    for (char c : v) {
      if (c == '\\' || c == '"') escaped += '\\';
      if (c == '\n') {
        escaped += "\\n";
        continue;
      }
      escaped += c;
    }
    pairs.push_back(absl::StrCat(k, "=\"", escaped, "\""));
  }
  return absl::StrCat(name, "{", absl::StrJoin(pairs, ","), "}");
}

// The family a sample belongs to, given the declared types.
std::string FamilyOf(const std::string& name, const std::map<std::string, std::string>& types) {
  for (absl::string_view suffix : {"_bucket", "_sum", "_count"}) {
    if (absl::EndsWith(name, suffix)) {
      const std::string base = name.substr(0, name.size() - suffix.size());
      auto it = types.find(base);
      if (it != types.end() && (it->second == "histogram" || (it->second == "summary" && suffix != "_bucket"))) {
        return base;
      }
    }
  }
  return name;
}

struct HistogramSeries {
  std::vector<std::pair<double, double>> buckets;  // (le, cumulative) in order of appearance
  std::optional<double> count;
  bool sum = false;
};

}  // namespace

std::optional<double> PrometheusScrape::Get(const std::string& series) const {
  auto it = samples.find(series);
  if (it == samples.end()) return std::nullopt;
  return it->second;
}

double PrometheusScrape::Sum(absl::string_view name, absl::string_view labels) const {
  double total = 0;
  for (const auto& [series, value] : samples) {
    if (series != name && !absl::StartsWith(series, absl::StrCat(name, "{"))) continue;
    bool all = true;
    for (absl::string_view pair : absl::StrSplit(labels, ',', absl::SkipEmpty())) {
      all = all && absl::StrContains(series, pair);
    }
    if (all) total += value;
  }
  return total;
}

absl::StatusOr<PrometheusScrape> ParsePrometheusText(absl::string_view text) {
  PrometheusScrape scrape;
  std::set<std::string> finished;  // families whose samples ended
  std::string current;             // family of the last sample
  std::map<std::string, HistogramSeries> histograms;  // by family + labels without le
  std::map<std::string, std::string> helps;
  if (!text.empty() && text.back() != '\n') return absl::InvalidArgumentError("the text must end with a newline");
  int number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++number;
    auto fail = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("line ", number, " \"", line, "\": ", why));
    };
    if (line.empty()) continue;
    if (line[0] == '#') {
      std::vector<absl::string_view> parts = absl::StrSplit(line, absl::MaxSplits(' ', 3));
      if (parts.size() >= 3 && (parts[1] == "HELP" || parts[1] == "TYPE")) {
        const std::string name(parts[2]);
        if (!ValidName(name, true)) return fail("bad metric name in comment");
        if (parts[1] == "HELP") {
          if (!helps.emplace(name, parts.size() > 3 ? std::string(parts[3]) : "").second) return fail("HELP twice");
          continue;
        }
        if (parts.size() != 4) return fail("TYPE without a type");
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!kTypes.contains(std::string(parts[3]))) return fail("unknown type");
        if (scrape.types.contains(name)) return fail("TYPE twice");
        if (finished.contains(name) || current == name) return fail("TYPE after the family's samples");
        scrape.types[name] = std::string(parts[3]);
      }
      continue;
    }
    absl::StatusOr<Sample> sample = ParseSample(line);
    if (!sample.ok()) return fail(sample.status().message());
    const std::string family = FamilyOf(sample->name, scrape.types);
    if (family != current) {
      if (finished.contains(family)) return fail("samples of a family are not contiguous");
      if (!current.empty()) finished.insert(current);
      current = family;
    }
    const std::string type = scrape.types.contains(family) ? scrape.types[family] : "untyped";
    if (type == "counter" && !(sample->value >= 0)) return fail("negative counter");
    std::string key = SeriesKey(sample->name, sample->labels);
    if (!scrape.samples.emplace(key, sample->value).second) return fail("series twice");
    if (type == "histogram") {
      std::optional<double> le;
      std::vector<std::pair<std::string, std::string>> rest;
      for (auto& [k, v] : sample->labels) {
        if (k == "le") {
          le = v == "+Inf" ? std::optional<double>(INFINITY) : ParseValue(v);
          if (!le.has_value()) return fail("bad le");
        } else {
          rest.emplace_back(k, v);
        }
      }
      HistogramSeries& h = histograms[SeriesKey(family, rest)];
      if (sample->name == family + "_bucket") {
        if (!le.has_value()) return fail("bucket without le");
        if (!h.buckets.empty() && (*le <= h.buckets.back().first || sample->value < h.buckets.back().second)) {
          return fail("buckets not cumulative in increasing le");
        }
        h.buckets.emplace_back(*le, sample->value);
      } else if (le.has_value()) {
        return fail("le on a non-bucket sample");
      } else if (sample->name == family + "_count") {
        h.count = sample->value;
      } else {
        h.sum = true;
      }
    }
  }
  for (const auto& [series, h] : histograms) {
    if (h.buckets.empty() || !std::isinf(h.buckets.back().first)) {
      return absl::InvalidArgumentError(absl::StrCat(series, ": no le=\"+Inf\" bucket"));
    }
    if (!h.count.has_value() || !h.sum) return absl::InvalidArgumentError(absl::StrCat(series, ": no _count or _sum"));
    if (*h.count != h.buckets.back().second) {
      return absl::InvalidArgumentError(absl::StrCat(series, ": +Inf bucket differs from _count"));
    }
  }
  return scrape;
}

}  // namespace kvindex::testing
