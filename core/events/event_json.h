#pragma once

// JSON rendering of decoded batches, for `kvindex decode` and debugging.

#include <string>

#include "core/events/event_batch.h"

namespace kvindex {

// Renders `batch` as a JSON object: {"ts", "dp_rank", "events": [{"type", ...}],
// "skipped_events", "skipped_fields", "bad_events"?}. Hashes are "0x" + 16
// lower-case hex digits; absent optionals of the original fields are null, the
// 2026 fields (group_idx, extra_keys, locality, ...) appear only when sent;
// bytes in extra_keys are "0x" + lower-case hex. Field names match
// ../shared/wire/expected.json. "bad_events" lists events that did not decode.
std::string EventBatchToJson(const EventBatch& batch, int indent = 1);

}  // namespace kvindex
