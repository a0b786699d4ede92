#pragma once

// RunClosedLoop: a closed-loop gRPC load generator. `concurrency` unary calls
// are always in flight (each completion immediately starts the next) over the
// asynchronous API: one CompletionQueue per client thread, calls spread over
// `channels` (separate TCP connections). Requests are pre-serialized byte
// buffers sent through the generic stub, so the client spends nothing on
// protobuf encoding and the same code path measures any method.
//
// Only calls that start after the warmup and complete before its end are
// recorded; the rest drain (no new calls) before it returns.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/support/byte_buffer.h"

namespace kvindex::bench {

struct LoadOptions {
  std::vector<std::shared_ptr<grpc::Channel>> channels;  // >= 1; calls are spread round robin
  std::string method;                                    // e.g. "/kvindex.v1.KvIndex/Match"
  std::vector<grpc::ByteBuffer> requests;                // serialized request messages
  std::vector<size_t> request_class;                     // class of each request (latencies per class)
  size_t classes = 1;
  std::vector<size_t> schedule;  // request indices, in sending order (cycled); empty: round robin
  size_t concurrency = 1;        // calls in flight
  size_t threads = 1;            // client threads (one CompletionQueue each)
  absl::Duration warmup = absl::Seconds(1);
  absl::Duration duration = absl::Seconds(5);
  absl::Duration call_deadline = absl::Seconds(10);
  std::string token;  // `authorization: Bearer` when non-empty
  // Called on the client thread `thread` with each successful response of a
  // recorded call (nullptr: responses are dropped unread).
  std::function<void(size_t thread, size_t request, grpc::ByteBuffer& response)> on_response;
};

struct LoadResult {
  double seconds = 0;        // the measured window
  uint64_t ok = 0;           // recorded calls that succeeded
  uint64_t errors = 0;       // recorded calls that failed
  uint64_t all_calls = 0;    // every completed call, warmup and drain included (for CPU per call)
  std::map<std::string, uint64_t> error_codes;  // "UNAVAILABLE: message" -> count (first 16 kinds)
  std::vector<std::vector<int64_t>> latency_ns;  // per class, successful recorded calls
  double client_cpu_seconds = 0;  // this process's CPU during the whole run (warmup and drain included)
  double rps() const { return seconds > 0 ? static_cast<double>(ok) / seconds : 0; }
};

LoadResult RunClosedLoop(const LoadOptions& options);

}  // namespace kvindex::bench
