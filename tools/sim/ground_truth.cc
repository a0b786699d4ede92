#include "tools/sim/ground_truth.h"

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_format.h"

namespace kvindex::sim {

std::vector<std::vector<uint64_t>> LeafChains(absl::Span<const HeldBlock> blocks) {
  absl::flat_hash_map<uint64_t, const HeldBlock*> by_hash;
  absl::flat_hash_set<uint64_t> parents;
  for (const HeldBlock& b : blocks) {
    by_hash[b.index_hash] = &b;
    if (b.parent_index_hash.has_value()) parents.insert(*b.parent_index_hash);
  }
  std::vector<std::vector<uint64_t>> chains;
  for (const HeldBlock& b : blocks) {
    if (parents.contains(b.index_hash)) continue;
    std::vector<uint64_t> chain(b.depth + 1);
    const HeldBlock* at = &b;
    for (size_t i = chain.size(); i-- > 0 && at != nullptr;) {
      chain[i] = at->index_hash;
      if (!at->parent_index_hash.has_value()) break;
      auto it = by_hash.find(*at->parent_index_hash);
      at = it == by_hash.end() ? nullptr : it->second;
    }
    chains.push_back(std::move(chain));
  }
  return chains;
}

std::string HexHash(uint64_t hash) { return absl::StrFormat("0x%016x", hash); }

nlohmann::json GroundTruthJson(absl::Span<const EngineTruth> engines, double time) {
  nlohmann::json pods = nlohmann::json::array();
  for (size_t i = 0; i < engines.size(); ++i) {
    const EngineTruth& e = engines[i];
    if (i == 0 || engines[i - 1].pod != e.pod) {
      pods.push_back({
          {"key", e.pod},
          {"namespace", e.ns},
          {"name", e.name},
          {"ip", e.ip},
          {"model", e.model},
          {"lora_name", e.lora_name},
          {"block_size", e.block_size},
          {"events_port", e.events_port},
          {"replay_port", e.replay_port.has_value() ? nlohmann::json(*e.replay_port) : nlohmann::json(nullptr)},
          {"dp_size", 0},
          {"topic", e.topic},
          {"layout", e.layout},
          {"hash", e.hashes},
          {"workers", nlohmann::json::array()},
      });
      if (e.offload_chunk_blocks > 0) pods.back()["offload_chunk_blocks"] = e.offload_chunk_blocks;
      if (!e.group1_kind.empty()) {
        pods.back()["groups"] = nlohmann::json::array(
            {{{"group_idx", 0}, {"kind", kFullAttention}, {"sliding_window", 0}, {"keep", 0}},
             {{"group_idx", 1}, {"kind", e.group1_kind}, {"sliding_window", e.sliding_window}, {"keep", e.group1_keep}}});
      }
    }
    nlohmann::json& pod = pods.back();
    pod["dp_size"] = pod["dp_size"].get<uint32_t>() + 1;
    nlohmann::json held = nlohmann::json::array();
    uint64_t gpu = 0, cpu = 0, group1 = 0;
    for (const HeldBlock& b : e.blocks) {
      nlohmann::json media = nlohmann::json::array();
      if (b.on_gpu) {
        media.push_back(kGpu);
        ++gpu;
      }
      if (b.on_cpu) {
        media.push_back(kCpu);
        ++cpu;
      }
      held.push_back({
          {"hash", HexHash(b.index_hash)},
          {"parent", b.parent_index_hash.has_value() ? nlohmann::json(HexHash(*b.parent_index_hash))
                                                     : nlohmann::json(nullptr)},
          {"depth", b.depth},
          {"media", std::move(media)},
          {"engine_hash", HexHash(b.engine_hash)},
      });
      if (b.in_group1) {
        held.back()["group1"] = true;
        ++group1;
      }
    }
    pod["workers"].push_back({
        {"dp_rank", e.dp_rank},
        {"events_port", e.events_port},
        {"replay_port", e.replay_port.has_value() ? nlohmann::json(*e.replay_port) : nlohmann::json(nullptr)},
        {"last_seq", e.last_seq},
        {"restarts", e.restarts},
        {"batches", e.batches},
        {"blocks", e.blocks.size()},
        {"group1_blocks", group1},
        {"gpu_blocks", gpu},
        {"cpu_blocks", cpu},
        {"held", std::move(held)},
    });
  }
  return {{"time", time}, {"pods", std::move(pods)}};
}

}  // namespace kvindex::sim
