#pragma once

// WorkerSnapshot: one worker's part of the index as a plain value — what
// PrefixIndex::ExportWorker copies out under the worker's lock and
// ImportWorker builds a worker back from (snapshots, core/snapshot/) — and
// BatchCursor, where the worker's engine stream stood when the copy was taken.
//
// A snapshot holds engine blocks, not the block table: the table is rebuilt
// from them on import (each block's index hash X is kept, so nothing is
// rehashed and the import does not depend on the events that stored it).
// Media are named, not numbered: a process numbers tiers in order of arrival
// (internal/medium_table.h), so bits of one process mean nothing in another.
//
// Plain values; thread-compatible.

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/index/worker_key.h"

namespace kvindex {

// Where a worker's engine stream stands after an applied batch: its seq, a
// digest of its payload bytes (BatchDigest) and whether the worker's history
// is complete after it (WorkerStatus::history_complete in core/ingest).
struct BatchCursor {
  uint64_t seq = 0;
  uint64_t digest = 0;
  bool history_complete = true;

  bool operator==(const BatchCursor&) const = default;
};

// The digest a BatchCursor records of a batch: XXH3-64 (seed 0) of its payload bytes.
uint64_t BatchDigest(std::string_view payload);

// Tier names a snapshot may use, as bits of SnapshotBlock::media.
inline constexpr int kSnapshotMedia = 7;

struct SnapshotBlock {
  uint64_t engine = 0;  // the engine's block hash
  uint64_t index = 0;   // its index hash X (README "Index hash")
  uint8_t media = 0;    // bits into WorkerSnapshot::media; never 0

  bool operator==(const SnapshotBlock&) const = default;
};

// One KV cache group of the worker (the whole worker's blocks for a single-group model).
struct GroupSnapshot {
  uint32_t group_idx = 0;
  bool named = false;               // an event carried its group_idx or kind
  std::optional<std::string> kind;  // kv_cache_spec_kind, as last sent
  uint32_t window = 0;              // kv_cache_spec_sliding_window, as last sent
  uint32_t block_size = 0;          // of its last event stored with tokens
  std::vector<SnapshotBlock> blocks;
  // Block -> the parent engine hash its engine named, for the blocks that
  // have one (eviction goes leaves first; an offloaded chunk covers its
  // block's predecessors), and the blocks a chunk covers per tier (by
  // WorkerSnapshot::media bit; 0: none).
  std::vector<std::pair<uint64_t, uint64_t>> parents;
  std::array<uint32_t, kSnapshotMedia> chunk_blocks = {};

  bool operator==(const GroupSnapshot&) const = default;
};

// A context the worker stores into: (model, LoRA, block size).
struct SnapshotContext {
  std::string model;
  std::string lora;
  uint32_t block_size = 0;

  bool operator==(const SnapshotContext&) const = default;
};

struct WorkerSnapshot {
  WorkerKey worker;
  std::string model;         // as of its last batch
  std::string default_lora;
  // The last batch applied with a cursor (PrefixIndex::Apply); nullopt when
  // none was since the worker was created or cleared.
  std::optional<BatchCursor> cursor;
  double last_event_ts = 0;
  std::vector<SnapshotContext> contexts;
  std::array<std::string, kSnapshotMedia> media;  // name of each bit; empty: unused
  std::vector<GroupSnapshot> groups;              // in the order the worker first named them

  bool operator==(const WorkerSnapshot&) const = default;

  // Engine blocks over every group (the worker's entries in the index).
  uint64_t entries() const {
    uint64_t n = 0;
    for (const GroupSnapshot& g : groups) n += g.blocks.size();
    return n;
  }
};

}  // namespace kvindex
