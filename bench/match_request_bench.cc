// Parsing a Match request: protobuf's generated parser against
// ParseMatchRequest (server/match_request_parser.h), for prompts whose token
// ids are drawn from a vocabulary of the given size (128k: most ids take 3
// varint bytes; 16k: at most 2).

#include <cstdint>
#include <random>
#include <string>

#include "benchmark/benchmark.h"
#include "google/protobuf/arena.h"
#include "server/match_request_parser.h"

namespace kvindex::server {
namespace {

std::string SerializedRequest(int64_t tokens, int64_t vocabulary) {
  std::mt19937_64 rng(42);
  v1::MatchRequest request;
  request.set_model("llama-3-8b");
  for (int64_t i = 0; i < tokens; ++i) request.add_token_ids(static_cast<uint32_t>(rng() % vocabulary));
  return request.SerializeAsString();
}

template <bool kProtobuf>
void BM_ParseMatchRequest(benchmark::State& state) {
  const std::string wire = SerializedRequest(state.range(0), state.range(1));
  for (auto _ : state) {
    google::protobuf::Arena arena;
    auto* request = google::protobuf::Arena::CreateMessage<v1::MatchRequest>(&arena);
    const bool ok = kProtobuf ? request->ParseFromString(wire) : ParseMatchRequest(wire, request);
    if (!ok) state.SkipWithError("does not parse");
    benchmark::DoNotOptimize(request->token_ids().data());
  }
  state.counters["tokens/s"] = benchmark::Counter(static_cast<double>(state.iterations() * state.range(0)),
                                                  benchmark::Counter::kIsRate);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * wire.size()));
}

void Args(benchmark::internal::Benchmark* b) {
  b->ArgNames({"tokens", "vocab"});
  for (int64_t tokens : {16, 2048, 8192}) {
    for (int64_t vocab : {16384, 32000, 131072}) b->Args({tokens, vocab});
  }
}

BENCHMARK(BM_ParseMatchRequest<true>)->Name("BM_ParseMatchRequest/protobuf")->Apply(Args);
BENCHMARK(BM_ParseMatchRequest<false>)->Name("BM_ParseMatchRequest/kvindex")->Apply(Args);

}  // namespace
}  // namespace kvindex::server

BENCHMARK_MAIN();
