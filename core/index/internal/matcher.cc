#include "core/index/internal/matcher.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/index/block_hash.h"
#include "core/index/extra_keys_hash.h"

namespace kvindex {
namespace {

// A worker's answer before its key and block size are looked up.
struct RawMatch {
  uint32_t worker;
  uint32_t blocks;
  uint32_t block_size;  // 0: the worker's own (hash queries)
  std::array<uint32_t, kMaxMedia> by_medium;
  double score;
  MediumMask last_mask;  // media of the last block credited
};

// Score of a block held on a medium mask: the highest weight among its media.
using MaskScores = std::array<double, 1 << kMaxMedia>;

MaskScores ScoreMasks(const MediumTable& media, const absl::flat_hash_map<std::string, double>& medium_weights) {
  std::array<double, kMaxMedia> weights;
  weights.fill(1.0);
  for (const auto& [name, weight] : medium_weights) {
    if (auto bit = media.Find(name)) weights[*bit] = weight;
  }
  MaskScores scores;
  scores[0] = 0;
  for (size_t mask = 1; mask < scores.size(); ++mask) {
    const int low = std::countr_zero(mask);
    const size_t rest = mask & (mask - 1);
    scores[mask] = rest == 0 ? weights[low] : std::max(weights[low], scores[rest]);
  }
  return scores;
}

bool SameHolders(absl::Span<const Holder> a, const std::vector<Holder>& b) {
  if (a.size() != b.size()) return false;
  if (a.size() == 1) return std::bit_cast<uint64_t>(a[0]) == std::bit_cast<uint64_t>(b[0]);  // skip the call
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(Holder)) == 0;
}

// Walks blocks 0..n-1 (hash_at(i) gives X_i, called in order, at most
// kPrefetchAhead blocks beyond the last one someone still matches) and
// appends each worker's contiguous run. `candidates` (ascending; empty: every
// worker) limits who may start a run.
template <typename HashAt>
void Walk(const BlockTable& table, size_t n, HashAt hash_at, const std::vector<uint32_t>& candidates,
          const MaskScores& mask_score, uint32_t block_size, std::vector<RawMatch>& out) {
  std::vector<RawMatch> active, next;
  // Holders of the last block merged, and how many blocks since had exactly
  // the same holders (common: a prefix cached everywhere). Those blocks are
  // credited in bulk, without a merge per block.
  std::vector<Holder> last;
  uint32_t repeats = 0;
  HolderTable::Scratch scratch;
  auto credit = [&](RawMatch& m, MediumMask mask, uint32_t blocks) {
    m.blocks += blocks;
    for (int b = 0; b < kMaxMedia; ++b) m.by_medium[b] += (mask >> b & 1) * blocks;
    m.score += mask_score[mask] * blocks;
    m.last_mask = mask;
  };
  auto flush_repeats = [&] {
    if (repeats == 0) return;
    for (RawMatch& a : active) credit(a, a.last_mask, repeats);
    repeats = 0;
  };
  // Merges block i's holders into the runs, under the block's shard lock;
  // false when no run goes on past block i.
  auto merge = [&](size_t i, absl::Span<const Holder> holders) {
    if (holders.empty()) return false;
    if (i > 0 && SameHolders(holders, last)) {
      ++repeats;
      return true;
    }
    flush_repeats();
    next.clear();
    if (i == 0) {
      size_t c = 0;
      for (const Holder& h : holders) {
        if (!candidates.empty()) {
          while (c < candidates.size() && candidates[c] < h.worker) ++c;
          if (c == candidates.size()) break;
          if (candidates[c] != h.worker) continue;
        }
        next.push_back(RawMatch{h.worker, 0, block_size, {}, 0, 0});
        credit(next.back(), h.media, 1);
      }
    } else {
      size_t h = 0;
      for (const RawMatch& a : active) {
        while (h < holders.size() && holders[h].worker < a.worker) ++h;
        if (h < holders.size() && holders[h].worker == a.worker) {
          next.push_back(a);
          credit(next.back(), holders[h].media, 1);
        } else {
          out.push_back(a);
        }
      }
    }
    active.swap(next);
    if (active.empty()) return false;
    last.assign(holders.begin(), holders.end());
    return true;
  };
  // Hashes run kPrefetchAhead blocks ahead of the lookups, and each block's
  // slot is prefetched once its hash is known: on an index larger than the
  // cache, the lookups' misses overlap instead of queueing one per block.
  std::array<uint64_t, kPrefetchAhead> ahead;
  size_t hashed = 0;
  for (size_t i = 0; i < n; ++i) {
    for (; hashed < std::min(n, i + kPrefetchAhead); ++hashed) {
      ahead[hashed % kPrefetchAhead] = hash_at(hashed);
      table.Prefetch(ahead[hashed % kPrefetchAhead]);
    }
    const uint64_t x = ahead[i % kPrefetchAhead];
    if (!table.WithHolders(x, scratch, [&](absl::Span<const Holder> holders) { return merge(i, holders); })) break;
  }
  flush_repeats();
  out.insert(out.end(), active.begin(), active.end());
}

// Resolves worker ids, orders best first, and fills the query-level fields.
MatchResult Finish(const MatchQuery& q, std::vector<RawMatch> raw, const WorkerDirectory& workers,
                   const ContextRegistry& contexts, const MediumTable& media) {
  MatchResult result;
  // A worker may appear once per block size; keep its best run.
  std::sort(raw.begin(), raw.end(), [](const RawMatch& a, const RawMatch& b) {
    return a.worker != b.worker ? a.worker < b.worker : a.score > b.score;
  });
  raw.erase(std::unique(raw.begin(), raw.end(), [](const RawMatch& a, const RawMatch& b) { return a.worker == b.worker; }),
            raw.end());
  std::vector<uint32_t> ids(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) ids[i] = raw[i].worker;
  result.workers.reserve(raw.size());
  workers.Resolve(ids, [&](size_t i, const WorkerBlocks& worker) {  // a worker removed while we walked is skipped
    const RawMatch& r = raw[i];
    WorkerMatch m;
    m.worker = worker.key();
    m.block_size = r.block_size != 0 ? r.block_size : worker.block_size();
    m.matched_blocks = r.blocks;
    m.matched_tokens = r.blocks * m.block_size;
    m.score = r.score;
    for (int b = 0; b < kMaxMedia; ++b) {
      if (r.by_medium[b] != 0) m.blocks_by_medium.emplace_back(media.Name(b), r.by_medium[b]);
    }
    result.workers.push_back(std::move(m));
  });
  std::sort(result.workers.begin(), result.workers.end(), [](const WorkerMatch& a, const WorkerMatch& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.matched_blocks != b.matched_blocks) return a.matched_blocks > b.matched_blocks;
    return a.worker < b.worker;
  });
  if (!result.workers.empty()) {
    result.block_size = result.workers.front().block_size;
  } else {
    std::vector<uint32_t> sizes = contexts.BlockSizes(q.model, q.lora_name);
    if (!sizes.empty()) result.block_size = sizes.front();
  }
  if (!q.block_hashes.empty()) {
    result.query_blocks = static_cast<uint32_t>(q.block_hashes.size());
  } else if (result.block_size != 0) {
    result.query_blocks = static_cast<uint32_t>(q.token_ids.size() / result.block_size);
  }
  return result;
}

}  // namespace

absl::StatusOr<MatchResult> Matcher::Match(const MatchQuery& q) const {
  if (q.model.empty()) return absl::InvalidArgumentError("model is required");
  if (q.token_ids.empty() == q.block_hashes.empty()) {
    return absl::InvalidArgumentError("exactly one of token_ids and block_hashes must be given");
  }
  std::vector<uint32_t> candidates;
  if (!q.pods.empty()) {
    candidates = workers_.IdsOfPods(q.pods);
    if (candidates.empty()) return Finish(q, {}, workers_, contexts_, media_);
  }
  const MaskScores scores = ScoreMasks(media_, q.medium_weights);

  std::vector<RawMatch> raw;
  if (!q.token_ids.empty()) {
    const bool keyed = !q.cache_salt.empty() || !q.mm_inputs.empty();
    ExtraKeysHasher keys;
    for (uint32_t bs : contexts_.BlockSizes(q.model, q.lora_name)) {
      const uint64_t seed = ContextSeed(q.model, q.lora_name, bs);
      const size_t blocks = q.token_ids.size() / bs;
      uint64_t parent = seed;
      Walk(
          table_, blocks,
          [&](size_t i) {
            parent = HashBlock(parent, q.token_ids.subspan(i * bs, bs));
            if (keyed) {
              keys.Clear();
              AddQueryExtraKeys(q.mm_inputs, q.cache_salt, uint64_t{i} * bs, bs, keys);
              parent = keys.Hash(parent);
            }
            return parent;
          },
          candidates, scores, bs, raw);
    }
  } else {
    Walk(table_, q.block_hashes.size(), [&](size_t i) { return q.block_hashes[i]; }, candidates, scores, 0, raw);
  }
  return Finish(q, std::move(raw), workers_, contexts_, media_);
}

}  // namespace kvindex
