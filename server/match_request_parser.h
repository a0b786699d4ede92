#pragma once

// Parses a serialized kvindex.v1.MatchRequest with exactly protobuf's result,
// decoding token_ids itself. A 2k-token Match spent ~16 % of the server's CPU
// in protobuf's packed-varint loop: token ids of 2^14 and more (most ids of a
// real vocabulary) are 3-byte varints, and protobuf 3.21 decodes each of those
// in an out-of-line slow path. Here each varint of the packed run is one
// 8-byte load, a count of its length and a few masks.
//
// The fast path covers what clients send (token_ids packed or not, in any
// number of runs, varints of up to 5 bytes, any other fields); anything else
// (groups, token_ids with a foreign wire type, longer or malformed varints,
// truncated input) is handed to protobuf whole, so that its verdict — and its
// error for bad input — stays the one protobuf gives.

#include "absl/strings/string_view.h"
#include "grpcpp/support/byte_buffer.h"
#include "kvindex/v1/kvindex.pb.h"

namespace kvindex::server {

// Parses `wire` into `request` (cleared first) as
// request->ParseFromArray(wire) would; false where that would be false.
bool ParseMatchRequest(absl::string_view wire, v1::MatchRequest* request);

// The same for a request as gRPC received it (its slices joined first unless
// there is one).
bool ParseMatchRequest(const grpc::ByteBuffer& wire, v1::MatchRequest* request);

// The bytes of a request as gRPC received it, as one view backed by `storage`
// (a copy only when they arrived in several slices; empty when there are none,
// i.e. an empty message). False when they cannot be read.
bool ReceivedBytes(const grpc::ByteBuffer& wire, grpc::Slice& storage, absl::string_view& bytes);

}  // namespace kvindex::server
