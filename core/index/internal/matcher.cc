#include "core/index/internal/matcher.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <numeric>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/status/status.h"
#include "core/index/block_hash.h"
#include "core/index/extra_keys_hash.h"
#include "core/index/internal/kv_cache_group.h"
#include "core/index/internal/speculative_table.h"

namespace kvindex {
namespace {

// A holder's contiguous run from block 0 (a worker's, or one KV cache group's
// of a hybrid model: kv_cache_group.h), before its key is looked up.
struct RawMatch {
  uint32_t worker;  // the holder id
  uint32_t blocks;
  uint32_t block_size;  // 0: the worker's own (hash queries)
  std::array<uint32_t, kMaxMedia> by_medium;
  double score;
  MediumMask last_mask;  // media of the last block credited
  uint32_t speculative = 0;  // blocks credited as held only speculatively
};

// Score of a block held on a medium mask: the highest weight among its media;
// the last entry is kSpeculativeMask's (a block held only speculatively).
using MaskScores = std::array<double, (1 << kMaxMedia) + 1>;
static_assert(kSpeculativeMask == (1 << kMaxMedia));

MaskScores ScoreMasks(const MediumTable& media, const absl::flat_hash_map<std::string, double>& medium_weights,
                      double speculative_weight) {
  std::array<double, kMaxMedia> weights;
  weights.fill(1.0);
  if (!medium_weights.empty()) {
    media.ForEach([&](int bit, const std::string& name) { weights[bit] = MediumTable::WeightOf(name, medium_weights); });
  }
  MaskScores scores;
  scores[0] = 0;
  scores[kSpeculativeMask] = speculative_weight;
  for (size_t mask = 1; mask < kSpeculativeMask; ++mask) {
    const int low = std::countr_zero(mask);
    const size_t rest = mask & (mask - 1);
    scores[mask] = rest == 0 ? weights[low] : std::max(weights[low], scores[rest]);
  }
  return scores;
}

// Whether holder lists `a` and `b` are the same. a_digest() and b_digest are
// their HolderTable digests, or 0 when not known (asked for only of lists
// longer than a pair, which are heap lists). Two known digests decide (a
// hundred holders' lists compare without reading them), else the items do.
template <typename DigestFn>
bool SameHolders(absl::Span<const Holder> a, DigestFn a_digest, const std::vector<Holder>& b, uint64_t b_digest) {
  if (a.size() != b.size()) return false;
  if (a.size() == 1) return std::bit_cast<uint64_t>(a[0]) == std::bit_cast<uint64_t>(b[0]);  // skip the call
  if (a.size() > 2 && b_digest != 0) {
    if (const uint64_t d = a_digest(); d != 0) return d == b_digest;
  }
  return std::memcmp(a.data(), b.data(), a.size() * sizeof(Holder)) == 0;
}

// The speculative holders a walk merges in: none (NoSpeculation: the code of
// every Match while no routing hint is held, or with SPECULATIVE weighted 0),
// or a SpeculativeTable's entries live at `now`.
struct NoSpeculation {
  static constexpr bool kActive = false;
  void HoldersOf(uint64_t, std::vector<Holder>&) const {}
};
struct LiveSpeculation {
  static constexpr bool kActive = true;
  const SpeculativeTable& table;
  absl::Time now;
  void HoldersOf(uint64_t x, std::vector<Holder>& out) const { table.HoldersOf(x, now, out); }
  bool Holds(uint64_t x, uint32_t worker) const { return table.Holds(x, worker, now); }
};

// `confirmed` and `speculative` holders (each sorted by holder) merged into
// `out`, sorted; a holder in both is its confirmed self (never counted twice).
void MergeSpeculative(absl::Span<const Holder> confirmed, const std::vector<Holder>& speculative,
                      std::vector<Holder>& out) {
  out.clear();
  size_t c = 0, s = 0;
  while (c < confirmed.size() || s < speculative.size()) {
    if (s == speculative.size() || (c < confirmed.size() && confirmed[c].worker <= speculative[s].worker)) {
      if (s < speculative.size() && confirmed[c].worker == speculative[s].worker) ++s;
      out.push_back(confirmed[c++]);
    } else {
      out.push_back(speculative[s++]);
    }
  }
}

// A worker's answer before it is a WorkerMatch: its key (copied under the
// directory's lock), block size, best run and, for a hybrid worker, the
// tokens its hit covers (0: the run's blocks x block size).
struct Found {
  WorkerKey key;
  uint32_t block_size;
  RawMatch run;
  uint32_t matched_tokens;
};

// The order of `found` best first: score, matched blocks, then key. Many
// workers often tie on both (a prefix cached everywhere), so the sort
// compares keys a lot: it compares small entries, and each key first by the
// 8 bytes after the prefix all pods share (big-endian, zero-padded: a
// smaller one is a smaller pod name), the whole key only when those tie.
// Requires a non-empty `found`.
std::vector<uint32_t> BestFirst(const std::vector<Found>& found) {
  struct Entry {
    double score;
    uint32_t blocks;
    uint32_t index;
    uint64_t pod_bytes;
  };
  const std::string& first = found.front().key.pod;
  size_t common = first.size();  // the length of the prefix every pod name shares
  for (const Found& f : found) {
    const size_t n = std::min(common, f.key.pod.size());
    common = std::mismatch(first.begin(), first.begin() + n, f.key.pod.begin()).first - first.begin();
  }
  std::vector<Entry> order;
  order.reserve(found.size());
  for (uint32_t i = 0; i < found.size(); ++i) {
    const std::string& pod = found[i].key.pod;
    uint64_t bytes = 0;
    for (size_t k = 0; k < 8; ++k) bytes = bytes << 8 | (common + k < pod.size() ? uint8_t(pod[common + k]) : 0);
    order.push_back(Entry{found[i].run.score, found[i].run.blocks, i, bytes});
  }
  std::sort(order.begin(), order.end(), [&](const Entry& a, const Entry& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.blocks != b.blocks) return a.blocks > b.blocks;
    if (a.pod_bytes != b.pod_bytes) return a.pod_bytes < b.pod_bytes;
    return found[a.index].key < found[b.index].key;
  });
  std::vector<uint32_t> indexes(order.size());
  for (size_t i = 0; i < order.size(); ++i) indexes[i] = order[i].index;
  return indexes;
}

// Walks blocks 0..n-1 (hash_at(i) gives X_i, called in order, at most
// kPrefetchAhead blocks beyond the last one someone still matches) and
// appends each holder's contiguous run. `candidates` (worker ids, ascending;
// empty: every worker) limits who may start a run.
template <typename Speculation, typename HashAt>
void Walk(const BlockTable& table, size_t n, HashAt hash_at, const std::vector<uint32_t>& candidates,
          const MaskScores& mask_score, uint32_t block_size, const Speculation& speculation,
          std::vector<RawMatch>& out) {
  std::vector<RawMatch> active, next;
  // Holders of the last block merged, and how many blocks since had exactly
  // the same holders (common: a prefix cached everywhere). Those blocks are
  // credited in bulk, without a merge per block.
  std::vector<Holder> last;
  uint64_t last_digest = 0;  // last's digest, 0 when not known
  uint32_t repeats = 0;
  HolderTable::Scratch scratch;
  ReaderLockSet shards;  // the shard locks this walk holds, released when it ends
  auto credit = [&](RawMatch& m, MediumMask mask, uint32_t blocks) {
    m.blocks += blocks;
    for (int b = 0; b < kMaxMedia; ++b) m.by_medium[b] += (mask >> b & 1) * blocks;
    if constexpr (Speculation::kActive) m.speculative += (mask >> kMaxMedia) * blocks;
    m.score += mask_score[mask] * blocks;
    m.last_mask = mask;
  };
  auto flush_repeats = [&] {
    if (repeats == 0) return;
    for (RawMatch& a : active) credit(a, a.last_mask, repeats);
    repeats = 0;
  };
  // Merges block i's holders into the runs, under the block's shard lock;
  // false when no run goes on past block i. `listed`: the holders are the
  // table's (HolderTable::Find's, with scratch), not a merged copy.
  auto merge = [&](size_t i, absl::Span<const Holder> holders, bool listed) {
    if (holders.empty()) return false;
    auto digest = [&] { return listed ? HolderTable::ListDigest(holders, scratch) : 0; };
    if (i > 0 && SameHolders(holders, digest, last, last_digest)) {
      ++repeats;
      return true;
    }
    flush_repeats();
    next.clear();
    if (i == 0) {
      size_t c = 0;
      for (const Holder& h : holders) {
        if (!candidates.empty()) {
          const uint32_t worker = WorkerOfHolder(h.worker);
          while (c < candidates.size() && candidates[c] < worker) ++c;
          if (c == candidates.size()) break;
          if (candidates[c] != worker) continue;
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
    last_digest = holders.size() > 2 ? digest() : 0;
    return true;
  };
  // Hashes run kPrefetchAhead blocks ahead of the lookups, and each block's
  // slot is prefetched once its hash is known: on an index larger than the
  // cache, the lookups' misses overlap instead of queueing one per block.
  std::array<uint64_t, kPrefetchAhead> ahead;
  size_t hashed = 0;
  [[maybe_unused]] std::vector<Holder> speculative, merged;  // (with speculation only)
  for (size_t i = 0; i < n; ++i) {
    for (; hashed < std::min(n, i + kPrefetchAhead); ++hashed) {
      ahead[hashed % kPrefetchAhead] = hash_at(hashed);
      table.Prefetch(ahead[hashed % kPrefetchAhead]);
    }
    const uint64_t x = ahead[i % kPrefetchAhead];
    if constexpr (Speculation::kActive) {
      speculative.clear();
      shards.ReleaseAll();  // the speculative table's lock comes before shard locks
      speculation.HoldersOf(x, speculative);  // under the table's lock, released before the shard's
      if (!speculative.empty()) {
        if (!table.WithHolders(x, scratch, shards, [&](absl::Span<const Holder> holders) {
              MergeSpeculative(holders, speculative, merged);
              return merge(i, merged, /*listed=*/false);
            })) {
          break;
        }
        continue;
      }
    }
    if (!table.WithHolders(x, scratch, shards, [&](absl::Span<const Holder> holders) {
          return merge(i, holders, /*listed=*/true);
        })) {
      break;
    }
  }
  shards.ReleaseAll();
  flush_repeats();
  out.insert(out.end(), active.begin(), active.end());
}

// The query's index hashes at one block size, computed as they are first
// asked for (the walk stops early; a hybrid worker's rule may look further).
class QueryChain {
 public:
  // The chain of q.token_ids at `block_size`.
  QueryChain(const MatchQuery& q, uint32_t block_size)
      : q_(q), block_size_(block_size), blocks_(q.token_ids.size() / block_size),
        parent_(ContextSeed(q.model, q.lora_name, block_size)),
        keyed_(!q.cache_salt.empty() || !q.mm_inputs.empty()) {
    xs_.reserve(blocks_);
  }
  // The query's own hashes (block size 0: the worker's own).
  explicit QueryChain(const MatchQuery& q) : q_(q), block_size_(0), blocks_(q.block_hashes.size()) {}

  uint32_t block_size() const { return block_size_; }
  size_t blocks() const { return blocks_; }

  // X of block i < blocks().
  uint64_t At(size_t i) {
    if (block_size_ == 0) return q_.block_hashes[i];
    while (xs_.size() <= i) {
      const size_t b = xs_.size();
      parent_ = HashBlock(parent_, q_.token_ids.subspan(b * block_size_, block_size_));
      if (keyed_) {
        keys_.Clear();
        AddQueryExtraKeys(q_.mm_inputs, q_.cache_salt, uint64_t{b} * block_size_, block_size_, keys_);
        parent_ = keys_.Hash(parent_);
      }
      xs_.push_back(parent_);
    }
    return xs_[i];
  }

 private:
  const MatchQuery& q_;
  const uint32_t block_size_;
  const size_t blocks_;
  uint64_t parent_ = 0;
  const bool keyed_ = false;
  ExtraKeysHasher keys_;
  std::vector<uint64_t> xs_;
};

// Applies vLLM's hit rule to the groups of one hybrid worker.
class HybridRule {
 public:
  // `sizes`: the block sizes the query's tokens were walked at (none for a hash query).
  // `speculation`: the live speculative entries, which stand for every group
  // of their worker at their block size; null: none.
  HybridRule(const BlockTable& table, const MaskScores& mask_score, const MatchQuery& q, absl::Span<const uint32_t> sizes,
             const LiveSpeculation* speculation)
      : table_(table), mask_score_(mask_score), q_(q), sizes_(sizes), speculation_(speculation) {}

  struct Hit {
    RawMatch blocks;  // the primary group's blocks within the hit
    uint32_t tokens;  // the hit's length
  };

  // The worker's hit: the longest length every group accepts, counted in the
  // primary group's blocks. `runs` are its holders' contiguous runs from
  // block 0. nullopt when no length is accepted.
  std::optional<Hit> Match(uint32_t worker, const WorkerBlocks::Layout& layout, absl::Span<const RawMatch> runs) {
    const bool by_hash = !q_.block_hashes.empty();
    // The primary group: the first full-attention group by group_idx, else the lowest group_idx.
    uint32_t primary = 0;
    for (uint32_t slot = 1; slot < layout.groups; ++slot) {
      const GroupShape& a = layout.shapes[slot];
      const GroupShape& p = layout.shapes[primary];
      if (PrimaryBefore(a.kind, a.group_idx, p.kind, p.group_idx)) primary = slot;
    }
    const uint32_t primary_bs = layout.shapes[primary].block_size;
    if (primary_bs == 0) return std::nullopt;
    // Each group's chain (hash queries: the hashes are at the primary's block
    // size; groups of another size cannot be checked), and the bound the
    // full-attention groups put on the hit.
    std::array<QueryChain*, kMaxGroupsPerWorker> chain_of{};
    uint64_t step = 1, bound = 0;
    for (uint32_t slot = 0; slot < layout.groups; ++slot) {
      const uint32_t bs = layout.shapes[slot].block_size;
      if (bs == 0) return std::nullopt;  // a group with no indexed block accepts nothing
      chain_of[slot] = by_hash ? (bs == primary_bs ? &ChainOf(0) : nullptr)
                               : (absl::c_linear_search(sizes_, bs) ? &ChainOf(bs) : nullptr);
      if (chain_of[slot] == nullptr) {
        if (!by_hash) return std::nullopt;  // nothing stored at this size: no hit
        continue;
      }
      step = std::lcm(step, uint64_t{bs});
      const uint64_t tokens = uint64_t{bs} * chain_of[slot]->blocks();
      bound = bound == 0 ? tokens : std::min(bound, tokens);
    }
    for (uint32_t slot = 0; slot < layout.groups; ++slot) {
      if (chain_of[slot] == nullptr || layout.shapes[slot].kind != GroupKind::kFull) continue;
      uint64_t run = 0;
      for (const RawMatch& r : runs) {
        if (SlotOfHolder(r.worker) == slot && (r.block_size == layout.shapes[slot].block_size || by_hash)) {
          run = std::max<uint64_t>(run, r.blocks);
        }
      }
      bound = std::min(bound, run * layout.shapes[slot].block_size);
    }
    // The longest multiple of every block size, up to the bound, that the
    // other groups accept: on a missing block i, no length that still needs
    // block i can be accepted, so the next candidate ends at or before it.
    uint64_t n = bound / step * step;
    while (n > 0) {
      std::optional<uint64_t> missing_at;  // tokens before the first missing block
      for (uint32_t slot = 0; slot < layout.groups && !missing_at; ++slot) {
        const GroupShape& g = layout.shapes[slot];
        if (chain_of[slot] == nullptr || g.kind == GroupKind::kFull) continue;
        const uint32_t end = static_cast<uint32_t>(n / g.block_size);
        for (uint32_t i = g.FirstNeeded(end); i < end; ++i) {
          if (HeldOn(chain_of[slot]->At(i), HolderId(worker, slot)) == 0) {
            missing_at = uint64_t{i} * g.block_size;
            break;
          }
        }
      }
      if (!missing_at) break;
      n = std::min(*missing_at, n - step) / step * step;
    }
    if (n == 0) return std::nullopt;
    // Counted in the primary group's blocks 0..n/B-1, which it holds (a full
    // group) or may not all hold (no full group: those it holds count).
    RawMatch m{HolderId(worker, primary), 0, by_hash ? 0 : primary_bs, {}, 0, 0};
    const uint32_t blocks = static_cast<uint32_t>(n / primary_bs);
    for (uint32_t i = 0; i < blocks; ++i) {
      const MediumMask media = HeldOn(chain_of[primary]->At(i), m.worker);
      if (media == 0) continue;
      ++m.blocks;
      for (int b = 0; b < kMaxMedia; ++b) m.by_medium[b] += media >> b & 1;
      m.speculative += media >> kMaxMedia;
      m.score += mask_score_[media];
    }
    return Hit{m, static_cast<uint32_t>(n)};
  }

 private:
  // The media `holder` holds X on (kSpeculativeMask: only a live speculative
  // entry of its worker); 0 when it does not hold X.
  MediumMask HeldOn(uint64_t x, uint32_t holder) {
    const MediumMask media = table_.WithHolders(x, scratch_, [&](absl::Span<const Holder> holders) -> MediumMask {
      auto it = std::lower_bound(holders.begin(), holders.end(), holder,
                                 [](const Holder& h, uint32_t id) { return h.worker < id; });
      return it != holders.end() && it->worker == holder ? it->media : 0;
    });
    if (media == 0 && speculation_ != nullptr && speculation_->Holds(x, WorkerOfHolder(holder))) {
      return kSpeculativeMask;
    }
    return media;
  }

  const BlockTable& table_;
  const MaskScores& mask_score_;
  // The query's chain at `block_size` (0: its hashes), made on first use: the
  // walk hashed the blocks without keeping them, as most Matches need no more.
  QueryChain& ChainOf(uint32_t block_size) {
    for (QueryChain& c : chains_) {
      if (c.block_size() == block_size) return c;
    }
    // Reserved once, on the first hybrid worker (never for most Matches): at
    // most one chain per size walked, so references stay valid.
    if (chains_.capacity() == 0) chains_.reserve(std::max<size_t>(sizes_.size(), 1));
    return block_size == 0 ? chains_.emplace_back(q_) : chains_.emplace_back(q_, block_size);
  }

  const MatchQuery& q_;
  const absl::Span<const uint32_t> sizes_;
  std::vector<QueryChain> chains_;  // ChainOf's; never reallocated once reserved
  HolderTable::Scratch scratch_;
  const LiveSpeculation* const speculation_;
};

// Resolves the holders' workers, applies the hit rule of hybrid workers,
// orders best first, and fills the query-level fields.
MatchResult Finish(const MatchQuery& q, std::vector<RawMatch> raw, absl::Span<const uint32_t> sizes,
                   const BlockTable& table, const MaskScores& mask_score, const WorkerDirectory& workers,
                   const ContextRegistry& contexts, const MediumTable& media, const LiveSpeculation* speculation) {
  MatchResult result;
  // By holder (a worker's groups adjacent), best run first.
  std::sort(raw.begin(), raw.end(), [](const RawMatch& a, const RawMatch& b) {
    return a.worker != b.worker ? a.worker < b.worker : a.score > b.score;
  });
  // One id per worker, and where its runs begin in `raw`.
  std::vector<uint32_t> ids, begins;
  for (size_t r = 0; r < raw.size(); ++r) {
    if (ids.empty() || ids.back() != WorkerOfHolder(raw[r].worker)) {
      ids.push_back(WorkerOfHolder(raw[r].worker));
      begins.push_back(static_cast<uint32_t>(r));
    }
  }
  begins.push_back(static_cast<uint32_t>(raw.size()));
  auto runs_of = [&](size_t i) { return absl::Span<const RawMatch>(raw.data() + begins[i], begins[i + 1] - begins[i]); };
  // A single-group worker's answer is its best run (it may have one per block
  // size); a hybrid worker's needs block lookups, made after the directory's
  // lock is released.
  struct Hybrid {
    size_t i;
    WorkerKey key;
    uint32_t block_size;
    WorkerBlocks::Layout layout;
  };
  std::vector<Found> found;
  std::vector<Hybrid> hybrids;
  found.reserve(ids.size());
  workers.Resolve(ids, [&](size_t i, const WorkerBlocks& worker) {  // a worker removed while we walked is skipped
    // A worker with no event yet (hints only) answers in its hints' block size.
    const uint32_t block_size = worker.block_size() != 0 ? worker.block_size() : worker.hint_block_size();
    if (worker.group_count() <= 1) {
      found.push_back(Found{worker.key(), block_size, runs_of(i).front(), 0});
    } else {
      hybrids.push_back(Hybrid{i, worker.key(), block_size, worker.GroupLayout()});
    }
  });
  HybridRule rule(table, mask_score, q, sizes, speculation);
  for (Hybrid& h : hybrids) {
    if (std::optional<HybridRule::Hit> hit = rule.Match(ids[h.i], h.layout, runs_of(h.i))) {
      found.push_back(Found{std::move(h.key), h.block_size, hit->blocks, hit->tokens});
    }
  }
  result.workers.reserve(found.size());
  auto emit = [&](Found& f) {
    WorkerMatch& m = result.workers.emplace_back();
    m.worker = std::move(f.key);
    m.block_size = f.run.block_size != 0 ? f.run.block_size : f.block_size;
    m.matched_blocks = f.run.blocks;
    m.matched_tokens = f.matched_tokens != 0 ? f.matched_tokens : f.run.blocks * m.block_size;
    m.score = f.run.score;
    for (int b = 0; b < kMaxMedia; ++b) {
      if (f.run.by_medium[b] != 0) m.blocks_by_medium.emplace_back(media.Name(b), f.run.by_medium[b]);
    }
    if (f.run.speculative != 0) m.blocks_by_medium.emplace_back(kSpeculativeTier, f.run.speculative);
  };
  if (found.size() == 1) {
    emit(found.front());  // the common single holder: nothing to order, no allocation
  } else if (found.size() > 1) {
    for (const uint32_t i : BestFirst(found)) emit(found[i]);
  }
  if (!result.workers.empty()) {
    result.block_size = result.workers.front().block_size;
  } else {
    const std::vector<uint32_t> known = contexts.BlockSizes(q.model, q.lora_name);
    if (!known.empty()) result.block_size = known.front();
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
  // Speculative entries take part only when some exist and SPECULATIVE does
  // not weigh 0 (then the answer is the confirmed blocks' alone).
  const double speculative_weight = speculative_ == nullptr || speculative_->empty()
                                        ? 0
                                        : MediumTable::WeightOf(kSpeculativeTier, q.medium_weights);
  std::optional<LiveSpeculation> live;
  if (speculative_weight > 0) live.emplace(LiveSpeculation{*speculative_, speculative_->Now()});
  const MaskScores scores = ScoreMasks(media_, q.medium_weights, speculative_weight);
  std::vector<RawMatch> raw;
  std::vector<uint32_t> sizes;  // the block sizes the tokens are walked at
  std::vector<uint32_t> candidates;
  if (!q.pods.empty()) {
    candidates = workers_.IdsOfPods(q.pods);
    if (candidates.empty()) return Finish(q, {}, sizes, table_, scores, workers_, contexts_, media_, nullptr);
  }
  if (!q.token_ids.empty()) {
    const bool keyed = !q.cache_salt.empty() || !q.mm_inputs.empty();
    ExtraKeysHasher keys;
    sizes = contexts_.BlockSizes(q.model, q.lora_name);
    if (live) {
      // Hints may be hashed at a block size no event showed (a pod without KV events).
      const std::vector<uint32_t> hinted = speculative_->BlockSizes(q.model, q.lora_name);
      if (hinted.empty()) {
        live.reset();
      } else {
        sizes.insert(sizes.end(), hinted.begin(), hinted.end());
        std::sort(sizes.begin(), sizes.end());
        sizes.erase(std::unique(sizes.begin(), sizes.end()), sizes.end());
      }
    }
    auto walk = [&](const auto& speculation) {
      for (uint32_t bs : sizes) {
        uint64_t parent = ContextSeed(q.model, q.lora_name, bs);
        Walk(
            table_, q.token_ids.size() / bs,
            [&](size_t i) {
              parent = HashBlock(parent, q.token_ids.subspan(i * bs, bs));
              if (keyed) {
                keys.Clear();
                AddQueryExtraKeys(q.mm_inputs, q.cache_salt, uint64_t{i} * bs, bs, keys);
                parent = keys.Hash(parent);
              }
              return parent;
            },
            candidates, scores, bs, speculation, raw);
      }
    };
    if (live) {
      walk(*live);
    } else {
      walk(NoSpeculation{});
    }
  } else {
    auto hash_at = [&](size_t i) { return q.block_hashes[i]; };
    if (live) {
      Walk(table_, q.block_hashes.size(), hash_at, candidates, scores, 0, *live, raw);
    } else {
      Walk(table_, q.block_hashes.size(), hash_at, candidates, scores, 0, NoSpeculation{}, raw);
    }
  }
  return Finish(q, std::move(raw), sizes, table_, scores, workers_, contexts_, media_, live ? &*live : nullptr);
}

}  // namespace kvindex
