#include "client/decode_command.h"

#include <fstream>
#include <iostream>
#include <istream>
#include <iterator>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/events/event_decoder.h"
#include "core/events/event_json.h"
#include "nlohmann/json.hpp"

namespace kvindex {
namespace {

constexpr std::string_view kUsage =
    "usage: kvindex decode FILE...\n"
    "  Decodes each FILE as one engine KV-event payload (msgpack; '-' reads stdin)\n"
    "  and prints it as JSON: an object for one FILE; for several, an array with one\n"
    "  entry per FILE in order, {\"file\": FILE, \"error\": REASON} for one that failed.\n"
    "  Exit status: 0 all decoded, 1 some FILE failed, 2 usage error.\n";

// Reads all of `in`, but at most `max` + 1 bytes so that an oversized input
// is rejected by the decoder without being held in memory.
std::string ReadAtMost(std::istream& in, size_t max) {
  std::string data;
  char buf[64 << 10];
  while (data.size() <= max && in.read(buf, sizeof(buf)).gcount() > 0) {
    data.append(buf, static_cast<size_t>(in.gcount()));
  }
  if (data.size() > max + 1) data.resize(max + 1);
  return data;
}

absl::StatusOr<std::string> ReadInput(std::string_view file, size_t max) {
  if (file == "-") {
    std::string data = ReadAtMost(std::cin, max);
    if (std::cin.bad()) return absl::UnavailableError("cannot read stdin");
    return data;
  }
  std::ifstream in{std::string(file), std::ios::binary};
  if (!in) return absl::NotFoundError("cannot open file");
  std::string data = ReadAtMost(in, max);
  if (in.bad()) return absl::UnavailableError("read error");
  return data;
}

}  // namespace

int RunDecodeCommand(std::span<const std::string_view> args, std::ostream& out,
                     std::ostream& err) {
  std::vector<std::string_view> files;
  for (std::string_view arg : args) {
    if (arg == "--help" || arg == "-h") {
      out << kUsage;
      return 0;
    }
    if (arg.size() > 1 && arg[0] == '-') {
      err << "kvindex decode: unknown option " << arg << "\n" << kUsage;
      return 2;
    }
    files.push_back(arg);
  }
  if (files.empty()) {
    err << kUsage;
    return 2;
  }
  const DecodeLimits limits;
  const bool as_array = files.size() > 1;
  int printed = 0;
  int status = 0;
  if (as_array) out << "[\n";
  for (std::string_view file : files) {
    absl::StatusOr<std::string> data = ReadInput(file, limits.max_payload_bytes);
    absl::StatusOr<EventBatch> batch =
        data.ok() ? DecodeEventBatch(*data, limits) : absl::StatusOr<EventBatch>(data.status());
    if (!batch.ok()) {
      err << "kvindex decode: " << file << ": " << batch.status().message() << "\n";
      status = 1;
      if (!as_array) continue;
    }
    if (printed++ > 0) out << ",\n";
    if (batch.ok()) {
      out << EventBatchToJson(*batch);
    } else {
      // Its place is kept, so entry i is always FILE i.
      const nlohmann::json failed = {{"file", std::string(file)}, {"error", std::string(batch.status().message())}};
      out << failed.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
    }
  }
  if (as_array) out << (printed > 0 ? "\n]" : "]");
  if (printed > 0 || as_array) out << "\n";
  out.flush();
  return status;
}

}  // namespace kvindex
