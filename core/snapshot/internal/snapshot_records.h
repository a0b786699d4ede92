#pragma once

// The records of a snapshot body (snapshot_format.h): a pod, and a worker
// (index/worker_snapshot.h). Encode appends; Decode reads one record and
// fails (false) on anything that is not one, without reading past the
// source or allocating more than the source's bytes could describe.
//
//   pod    = Str(ns) Str(name) Str(ip) Str(phase) map(labels) map(annotations) Str(model)
//            Str(lora_name) OptBool(kv_events_enabled) LE32(events_port) OptU32(replay_port)
//            LE32(dp_size) Str(topic) OptBool(engine_connects)
//   map    = LE64(n) (Str(key) Str(value))*, keys ascending
//   worker = Str(pod) LE32(dp_rank) Str(model) Str(default_lora)
//            Bool(has cursor) [LE64(seq) LE64(digest) Bool(history_complete)] F64(last_event_ts)
//            LE64(n) (Str(model) Str(lora) LE32(block_size))*      contexts
//            Str(media name)*7                                     by bit; "" unused
//            LE64(n) group*
//   group  = LE32(group_idx) Bool(named) OptStr(kind) LE32(window) LE32(block_size)
//            Bool(1) LE64(n) (LE64(engine) LE64(parent))* LE32(chunk blocks)*7
//            (the Bool: parents were kept only for offloading groups before; read, not used)
//            LE64(n) (LE64(engine) LE64(index) U8(media))*
//
// Pure functions; thread-safe.

#include <string>

#include "core/index/worker_snapshot.h"
#include "core/ingest/pod.h"
#include "core/snapshot/internal/byte_codec.h"

namespace kvindex::snapshot_internal {

void EncodePod(const Pod& pod, ByteSink& sink);
bool DecodePod(ByteSource& source, Pod& pod);

void EncodeWorker(const WorkerSnapshot& worker, ByteSink& sink);
bool DecodeWorker(ByteSource& source, WorkerSnapshot& worker);

}  // namespace kvindex::snapshot_internal
