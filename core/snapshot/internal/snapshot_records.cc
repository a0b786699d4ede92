#include "core/snapshot/internal/snapshot_records.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace kvindex::snapshot_internal {
namespace {

void EncodeMap(const absl::flat_hash_map<std::string, std::string>& map, ByteSink& sink) {
  std::vector<std::pair<std::string, std::string>> sorted(map.begin(), map.end());
  std::sort(sorted.begin(), sorted.end());
  sink.U64(sorted.size());
  for (const auto& [k, v] : sorted) {
    sink.Str(k);
    sink.Str(v);
  }
}

bool DecodeMap(ByteSource& source, absl::flat_hash_map<std::string, std::string>& map) {
  uint64_t n = 0;
  if (!source.Count(n, 8)) return false;
  map.clear();
  for (uint64_t i = 0; i < n; ++i) {
    std::string k, v;
    if (!source.Str(k) || !source.Str(v)) return false;
    map.insert_or_assign(std::move(k), std::move(v));
  }
  return true;
}

}  // namespace

void EncodePod(const Pod& pod, ByteSink& sink) {
  sink.Str(pod.ns);
  sink.Str(pod.name);
  sink.Str(pod.ip);
  sink.Str(pod.phase);
  EncodeMap(pod.labels, sink);
  EncodeMap(pod.annotations, sink);
  sink.Str(pod.model);
  sink.Str(pod.lora_name);
  sink.OptBool(pod.kv_events_enabled);
  sink.U32(pod.events_port);
  sink.OptU32(pod.replay_port);
  sink.U32(pod.dp_size);
  sink.Str(pod.topic);
  sink.OptBool(pod.engine_connects);
}

bool DecodePod(ByteSource& source, Pod& pod) {
  return source.Str(pod.ns) && source.Str(pod.name) && source.Str(pod.ip) && source.Str(pod.phase) &&
         DecodeMap(source, pod.labels) && DecodeMap(source, pod.annotations) && source.Str(pod.model) &&
         source.Str(pod.lora_name) && source.OptBool(pod.kv_events_enabled) && source.U32(pod.events_port) &&
         source.OptU32(pod.replay_port) && source.U32(pod.dp_size) && source.Str(pod.topic) &&
         source.OptBool(pod.engine_connects);
}

void EncodeWorker(const WorkerSnapshot& w, ByteSink& sink) {
  sink.Str(w.worker.pod);
  sink.U32(w.worker.dp_rank);
  sink.Str(w.model);
  sink.Str(w.default_lora);
  sink.Bool(w.cursor.has_value());
  if (w.cursor) {
    sink.U64(w.cursor->seq);
    sink.U64(w.cursor->digest);
    sink.Bool(w.cursor->history_complete);
  }
  sink.F64(w.last_event_ts);
  sink.U64(w.contexts.size());
  for (const SnapshotContext& c : w.contexts) {
    sink.Str(c.model);
    sink.Str(c.lora);
    sink.U32(c.block_size);
  }
  for (const std::string& name : w.media) sink.Str(name);
  sink.U64(w.groups.size());
  for (const GroupSnapshot& g : w.groups) {
    sink.U32(g.group_idx);
    sink.Bool(g.named);
    sink.OptStr(g.kind);
    sink.U32(g.window);
    sink.U32(g.block_size);
    sink.Bool(true);  // (parents kept: every group's, now)
    sink.U64(g.parents.size());
    for (const auto& [engine, parent] : g.parents) {
      sink.U64(engine);
      sink.U64(parent);
    }
    for (uint32_t f : g.chunk_blocks) sink.U32(f);
    sink.U64(g.blocks.size());
    for (const SnapshotBlock& b : g.blocks) {
      sink.U64(b.engine);
      sink.U64(b.index);
      sink.U8(b.media);
    }
  }
}

bool DecodeWorker(ByteSource& source, WorkerSnapshot& w) {
  bool has_cursor = false;
  if (!source.Str(w.worker.pod) || !source.U32(w.worker.dp_rank) || !source.Str(w.model) ||
      !source.Str(w.default_lora) || !source.Bool(has_cursor)) {
    return false;
  }
  w.cursor.reset();
  if (has_cursor) {
    BatchCursor& c = w.cursor.emplace();
    if (!source.U64(c.seq) || !source.U64(c.digest) || !source.Bool(c.history_complete)) return false;
  }
  uint64_t n = 0;
  if (!source.F64(w.last_event_ts) || !source.Count(n, 12)) return false;
  w.contexts.resize(n);
  for (SnapshotContext& c : w.contexts) {
    if (!source.Str(c.model) || !source.Str(c.lora) || !source.U32(c.block_size)) return false;
  }
  for (std::string& name : w.media) {
    if (!source.Str(name)) return false;
  }
  if (!source.Count(n, 4 + 1 + 1 + 4 + 4 + 1 + 8 + 4 * kSnapshotMedia + 8)) return false;
  w.groups.resize(n);
  for (GroupSnapshot& g : w.groups) {
    uint64_t parents = 0, blocks = 0;
    bool parents_kept = false;  // (unused: see the header)
    if (!source.U32(g.group_idx) || !source.Bool(g.named) || !source.OptStr(g.kind) || !source.U32(g.window) ||
        !source.U32(g.block_size) || !source.Bool(parents_kept) || !source.Count(parents, 16)) {
      return false;
    }
    g.parents.resize(parents);
    for (auto& [engine, parent] : g.parents) {
      if (!source.U64(engine) || !source.U64(parent)) return false;
    }
    for (uint32_t& f : g.chunk_blocks) {
      if (!source.U32(f)) return false;
    }
    if (!source.Count(blocks, 17)) return false;
    g.blocks.resize(blocks);
    for (SnapshotBlock& b : g.blocks) {
      if (!source.U64(b.engine) || !source.U64(b.index) || !source.U8(b.media)) return false;
    }
  }
  return true;
}

}  // namespace kvindex::snapshot_internal
