#pragma once

// JSON rendering of decoded batches, for `kvindex decode` and debugging.

#include <string>

#include "core/event_batch.h"

namespace kvindex {

// Renders `batch` as a JSON object: {"ts", "dp_rank", "events": [{"type", ...}],
// "skipped_events", "skipped_fields"}. Hashes are "0x" + 16 lower-case hex
// digits; absent optionals are null. Field names match ../shared/wire/expected.json.
std::string EventBatchToJson(const EventBatch& batch, int indent = 1);

}  // namespace kvindex
