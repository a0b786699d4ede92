#pragma once

// Ground truth: what each simulated engine holds, in kvindex's terms (index
// hashes, README "Index hash"), so tests and demos can check kvindex's answers.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/types/span.h"
#include "nlohmann/json.hpp"
#include "tools/sim/engine_cache.h"

namespace kvindex::sim {

// One engine (a pod's dp rank) and the blocks it holds after batch `last_seq`.
struct EngineTruth {
  std::string pod;  // "namespace/name"
  std::string ns;
  std::string name;
  std::string ip;
  uint32_t dp_rank = 0;
  uint32_t events_port = 0;
  std::optional<uint32_t> replay_port;
  std::string topic;
  std::string model;
  std::string lora_name;
  uint32_t block_size = 0;
  std::string layout;  // "map", "array", "sglang"
  std::string hashes;  // "int", "bytes"
  int64_t last_seq = -1;   // seq of the last published batch of this incarnation; -1: none yet
  uint64_t restarts = 0;
  uint64_t batches = 0;    // published over every incarnation
  std::vector<HeldBlock> blocks;  // parents before children
  uint32_t offload_chunk_blocks = 0;  // > 0: CPU copies come as OffloadingConnector chunks
  // Hybrid engines: group 1's kind ("sliding_window", "mamba"; empty: not
  // hybrid), window (tokens) and the blocks it must hold ending at a hit.
  std::string group1_kind;
  uint32_t sliding_window = 0;
  uint32_t group1_keep = 0;
};

// For every held block that no held block names as parent, the index hashes of
// its chain from block 0: Match of such a chain must report its full length.
std::vector<std::vector<uint64_t>> LeafChains(absl::Span<const HeldBlock> blocks);

// "0x" and 16 lowercase hex digits.
std::string HexHash(uint64_t hash);

// The --truth_file document: {"time", "pods": [{key, namespace, name, ip, model,
// lora_name, block_size, events_port, replay_port, dp_size, topic, layout,
// hash, "workers": [{dp_rank, events_port, replay_port, last_seq, restarts,
// batches, blocks, gpu_blocks, cpu_blocks, "held": [{hash, parent, depth,
// media, engine_hash}]}]}]}. Engines of one pod must be adjacent, rank order.
// A hybrid pod also has "groups": [{group_idx, kind, sliding_window, keep}]
// (group 0 full_attention, then group 1), its workers "group1_blocks" and its
// held blocks "group1": true when group 1 holds them too; "held" and the
// media counts are group 0's, as ListPods counts them (the index's entries
// are "blocks" + "group1_blocks").
// An offloading pod says "offload_chunk_blocks".
nlohmann::json GroundTruthJson(absl::Span<const EngineTruth> engines, double time);

}  // namespace kvindex::sim
