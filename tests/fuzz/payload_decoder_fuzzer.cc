// libFuzzer target: one engine payload (msgpack) through everything that reads
// it: DecodeEventBatch, EventBatchToJson, and PrefixIndex::Apply/Match/Remove.
// Seeds: ../shared/wire/vectors. Invariants checked beyond "no crash, no
// sanitizer report": the JSON rendering parses, a decoded BlockStored's token
// count matches its blocks (or it has none: an offloaded chunk), a bad
// event's message names its reason, a worker never holds more than its cap, Match of a
// stored prompt succeeds, and removing the worker leaves an empty index.

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <variant>

#include "absl/status/statusor.h"
#include "core/events/event_decoder.h"
#include "core/events/event_json.h"
#include "core/index/prefix_index.h"
#include "nlohmann/json.hpp"

namespace {

void Check(bool condition, const char* what) {
  if (!condition) {
    std::fprintf(stderr, "invariant violated: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace kvindex;
  const std::string_view payload(reinterpret_cast<const char*>(data), size);
  // Limits a little tighter than the defaults so the fuzzer explores past them.
  DecodeLimits limits;
  limits.max_events = 4096;
  limits.max_blocks_per_event = 4096;
  limits.max_block_size = 4096;
  absl::StatusOr<EventBatch> batch = DecodeEventBatch(payload, limits);
  if (!batch.ok()) {
    Check(batch.status().code() == absl::StatusCode::kInvalidArgument, "decode errors are INVALID_ARGUMENT");
    (void)DecodeErrorReasonName(DecodeErrorReasonOf(batch.status()));
    return 0;
  }
  for (const kvindex::BadEvent& bad : batch->bad_events) {
    Check(DecodeErrorReasonOf(absl::InvalidArgumentError(bad.message)) == bad.reason,
          "a bad event's message starts with its reason");
  }
  const std::string json = EventBatchToJson(*batch);
  Check(nlohmann::json::accept(json), "EventBatchToJson renders valid JSON");

  constexpr size_t kCap = 64;
  PrefixIndex index(IndexOptions{.max_blocks_per_worker = kCap, .max_entries = 4 * kCap, .shards = 4});
  const WorkerKey a{"fuzz/a", 0};
  const WorkerKey b{"fuzz/b", 1};
  const WorkerContext context{.model = "m", .default_lora = ""};
  (void)index.Apply(a, context, *batch);
  (void)index.Apply(b, context, *batch);
  (void)index.Apply(a, context, *batch);  // the same batch again: idempotent stores
  for (const Event& event : batch->events) {
    const auto* stored = std::get_if<BlockStored>(&event);
    if (stored == nullptr) continue;
    Check(!stored->HasTokens() ||
              stored->token_ids.size() == uint64_t{stored->block_size} * stored->block_hashes.size(),
          "decoded BlockStored has block_size tokens per block, or none (an offloaded chunk)");
    Check(stored->extra_keys.empty() || stored->extra_keys.size() == stored->block_hashes.size(),
          "extra_keys has one entry per block");
    if (stored->token_ids.empty()) continue;
    const std::string lora = stored->lora_name.value_or("");
    MatchQuery query;
    query.model = "m";
    query.lora_name = lora;
    query.token_ids = stored->token_ids;
    absl::StatusOr<MatchResult> match = index.Match(query);
    Check(match.ok(), "Match of stored tokens succeeds");
    for (const WorkerMatch& w : match->workers) {
      Check(w.matched_blocks <= match->query_blocks || w.block_size != match->block_size,
            "a worker matches at most the query's blocks");
    }
  }
  for (const WorkerStats& stats : index.ListWorkers()) Check(stats.blocks <= kCap, "per-worker cap holds");
  Check(index.Stats().entries <= 4 * kCap, "global cap holds");
  index.ClearWorker(b);
  index.RemovePod("fuzz/a");
  index.RemoveWorker(b);
  Check(index.Stats().entries == 0, "no entries after every worker is removed");
  return 0;
}
