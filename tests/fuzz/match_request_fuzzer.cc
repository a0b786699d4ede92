// libFuzzer target: Match requests as they arrive over gRPC. The input is the
// serialized request; ParseMatchRequest must give protobuf's verdict and, when
// it parses, protobuf's message.

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "google/protobuf/stubs/logging.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "kvindex/v1/kvindex.pb.h"
#include "server/match_request_parser.h"

namespace {

std::string Bytes(const kvindex::v1::MatchRequest& request) {
  std::string out;
  {
    google::protobuf::io::StringOutputStream stream(&out);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    request.SerializeToCodedStream(&coded);
  }  // flushed
  return out;
}

}  // namespace

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
  if (expected_ok && Bytes(got) != Bytes(expected)) {
    std::fprintf(stderr, "ParseMatchRequest's message differs from protobuf's:\n%s\nvs\n%s\n",
                 got.DebugString().c_str(), expected.DebugString().c_str());
    std::abort();
  }
  return 0;
}
