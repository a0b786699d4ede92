// Decoding alone: payloads as engines send them (kvindex-sim's encoder), in MB/s
// (bytes_per_second) and events/s (items_per_second).
//
//   build/bin/event_decoder_bench

#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/events/event_decoder.h"
#include "tools/sim/payload_encoder.h"

namespace kvindex {
namespace {

constexpr uint32_t kBlockSize = 16;

// One BlockStored of `blocks` blocks followed by a BlockRemoved of as many, as a
// busy engine's batch looks.
EventBatch TypicalBatch(size_t blocks) {
  std::mt19937_64 rng(blocks);
  EventBatch batch;
  batch.ts = 1700000000.25;
  batch.dp_rank = 0;
  BlockStored s;
  s.block_size = kBlockSize;
  s.parent_block_hash = rng();
  s.medium = "GPU";
  for (size_t b = 0; b < blocks; ++b) s.block_hashes.push_back(rng());
  for (size_t t = 0; t < blocks * kBlockSize; ++t) s.token_ids.push_back(static_cast<uint32_t>(rng() % 128000));
  batch.events.push_back(std::move(s));
  BlockRemoved r;
  r.medium = "GPU";
  for (size_t b = 0; b < blocks; ++b) r.block_hashes.push_back(rng());
  batch.events.push_back(std::move(r));
  return batch;
}

// Args: layout (0 map, 1 array, 2 sglang), hashes (0 int, 1 bytes), blocks per event.
void BM_Decode(benchmark::State& state) {
  const auto layout = static_cast<sim::PayloadLayout>(state.range(0));
  const auto hashes = static_cast<sim::HashEncoding>(state.range(1));
  const EventBatch batch = TypicalBatch(state.range(2));
  const std::string payload = sim::EncodePayload(batch, layout, hashes);
  for (auto _ : state) {
    auto decoded = DecodeEventBatch(payload);
    if (!decoded.ok()) {
      state.SkipWithError(std::string(decoded.status().message()).c_str());
      break;
    }
    benchmark::DoNotOptimize(decoded);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * payload.size()));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * batch.events.size()));
  state.SetLabel(std::string(sim::PayloadLayoutName(layout)) + "/" + std::string(sim::HashEncodingName(hashes)) +
                 " payload=" + std::to_string(payload.size()) + "B, items = events");
  state.counters["blocks_per_second"] = benchmark::Counter(
      static_cast<double>(state.iterations() * 2 * state.range(2)), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_Decode)
    ->ArgNames({"layout", "hashes", "blocks"})
    ->ArgsProduct({{0, 1, 2}, {0, 1}, {1, 16}});

}  // namespace
}  // namespace kvindex

BENCHMARK_MAIN();
