// libFuzzer target: Match requests as they arrive over gRPC. The input is the
// serialized request; ParseMatchRequest must give protobuf's verdict and, when
// it parses, protobuf's message.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "kvindex/v1/kvindex.pb.h"
#include "server/match_request_parser.h"
#include "tests/server/deterministic_bytes.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static google::protobuf::LogSilencer* quiet = new google::protobuf::LogSilencer;  // invalid UTF-8 logs
  (void)quiet;
  const absl::string_view wire(reinterpret_cast<const char*>(data), size);
  kvindex::v1::MatchRequest expected;
  const bool expected_ok = expected.ParseFromArray(data, static_cast<int>(size));
  kvindex::v1::MatchRequest got;
  const bool got_ok = kvindex::server::ParseMatchRequest(wire, &got);
  if (got_ok != expected_ok) {
    std::fprintf(stderr, "ParseMatchRequest says %d, protobuf %d\n", got_ok, expected_ok);
    std::abort();
  }
  // Compared as deterministic bytes: a NaN weight is not equal to itself.
  using kvindex::testing::DeterministicBytes;
  if (expected_ok && DeterministicBytes(got) != DeterministicBytes(expected)) {
    std::fprintf(stderr, "ParseMatchRequest's message differs from protobuf's:\n%s\nvs\n%s\n",
                 got.DebugString().c_str(), expected.DebugString().c_str());
    std::abort();
  }
  return 0;
}
