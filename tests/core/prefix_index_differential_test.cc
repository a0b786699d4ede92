// Randomized differential test: thousands of random stored / removed / cleared /
// remove-worker operations over several workers, media, LoRAs and block sizes,
// checked after every step against a deliberately naive reference model.

#include <algorithm>
#include <iostream>
#include <list>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "core/block_hash.h"
#include "core/prefix_index.h"
#include "gtest/gtest.h"

namespace kvindex {
namespace {

// The reference: per worker, a list of engine blocks in LRU order (front = most
// recent), each with its index hash and set of media. Everything is linear scans.
struct RefBlock {
  uint64_t engine;
  uint64_t index;
  std::set<std::string> media;
};

struct RefWorker {
  WorkerContext context;
  uint32_t block_size = 0;
  std::list<RefBlock> blocks;

  RefBlock* Find(uint64_t engine) {
    for (RefBlock& b : blocks) {
      if (b.engine == engine) return &b;
    }
    return nullptr;
  }
  void Erase(uint64_t engine) {
    blocks.remove_if([&](const RefBlock& b) { return b.engine == engine; });
  }
  // Union of the media of every engine block mapping to `index`.
  std::set<std::string> MediaOf(uint64_t index) const {
    std::set<std::string> out;
    for (const RefBlock& b : blocks) {
      if (b.index == index) out.insert(b.media.begin(), b.media.end());
    }
    return out;
  }
};

// Eviction is the index's choice (second chance); the reference adopts it after each
// batch and checks only that the index evicted exactly as many blocks as it says,
// all of them blocks the reference held, and that the worker is within its cap.
class Reference {
 public:
  void Apply(const WorkerKey& key, const WorkerContext& context, const EventBatch& batch) {
    RefWorker& w = workers_[key];
    w.context = context;
    for (const Event& event : batch.events) {
      if (const auto* s = std::get_if<BlockStored>(&event)) {
        uint64_t parent;
        if (s->parent_block_hash) {
          RefBlock* p = w.Find(*s->parent_block_hash);
          if (p == nullptr) continue;  // unresolvable: not indexed
          parent = p->index;
        } else {
          parent = ContextSeed(context.model, s->lora_name.value_or(context.default_lora), s->block_size);
        }
        w.block_size = s->block_size;
        for (size_t i = 0; i < s->block_hashes.size(); ++i) {
          parent = HashBlock(parent, absl::MakeConstSpan(s->token_ids).subspan(i * s->block_size, s->block_size));
          const std::string medium = s->medium.value_or("GPU");
          RefBlock* b = w.Find(s->block_hashes[i]);
          if (b != nullptr && b->index == parent) {
            RefBlock copy = *b;
            copy.media.insert(medium);
            w.Erase(copy.engine);
            w.blocks.push_front(copy);
          } else {
            if (b != nullptr) w.Erase(b->engine);
            w.blocks.push_front(RefBlock{s->block_hashes[i], parent, {medium}});
          }
        }
      } else if (const auto* r = std::get_if<BlockRemoved>(&event)) {
        for (uint64_t h : r->block_hashes) {
          RefBlock* b = w.Find(h);
          if (b == nullptr) continue;
          b->media.erase(r->medium.value_or("GPU"));
          if (b->media.empty()) w.Erase(h);
        }
      } else {
        w.blocks.clear();
      }
    }
  }

  // Adopts the index's eviction choices for `key`: keeps only the engine blocks
  // the index still holds. Returns how many were dropped.
  size_t AdoptEvictions(const WorkerKey& key, const std::vector<uint64_t>& held) {
    RefWorker& w = workers_[key];
    const std::set<uint64_t> kept(held.begin(), held.end());
    const size_t before = w.blocks.size();
    w.blocks.remove_if([&](const RefBlock& b) { return !kept.count(b.engine); });
    return before - w.blocks.size();
  }

  void ClearWorker(const WorkerKey& key) {
    auto it = workers_.find(key);
    if (it != workers_.end()) it->second.blocks.clear();
  }
  void RemoveWorker(const WorkerKey& key) { workers_.erase(key); }
  void RemovePod(const std::string& pod) {
    std::erase_if(workers_, [&](const auto& kv) { return kv.first.pod == pod; });
  }

  struct Answer {
    uint32_t blocks = 0;
    uint32_t tokens = 0;
    std::map<std::string, uint32_t> by_medium;
    double score = 0;
    bool operator==(const Answer&) const = default;
  };

  std::map<WorkerKey, Answer> Match(const std::string& model, const std::string& lora,
                                    const std::vector<uint32_t>& tokens,
                                    const std::map<std::string, double>& weights) const {
    std::map<WorkerKey, Answer> out;
    for (const auto& [key, w] : workers_) {
      if (w.context.model != model || w.block_size == 0) continue;
      // A worker may hold chains of every block size it ever used; try those that exist.
      std::set<uint32_t> sizes;
      for (const auto& [k2, w2] : workers_) {
        if (w2.block_size != 0) sizes.insert(w2.block_size);
      }
      Answer best;
      for (uint32_t bs : sizes) {
        Answer a;
        for (uint64_t x : HashPrefix(ContextSeed(model, lora, bs), tokens, bs)) {
          std::set<std::string> media = w.MediaOf(x);
          if (media.empty()) break;
          ++a.blocks;
          double s = 0;
          bool first = true;
          for (const std::string& m : media) {
            ++a.by_medium[m];
            const double wt = weights.count(m) ? weights.at(m) : 1.0;
            s = first ? wt : std::max(s, wt);
            first = false;
          }
          a.score += s;
        }
        a.tokens = a.blocks * bs;
        if (a.blocks > best.blocks) best = a;
      }
      if (best.blocks > 0) out[key] = best;
    }
    return out;
  }

  size_t Entries() const {
    size_t n = 0;
    for (const auto& [key, w] : workers_) n += w.blocks.size();
    return n;
  }
  size_t Blocks() const {
    std::set<uint64_t> distinct;
    for (const auto& [key, w] : workers_) {
      for (const RefBlock& b : w.blocks) distinct.insert(b.index);
    }
    return distinct.size();
  }
  const std::map<WorkerKey, RefWorker>& workers() const { return workers_; }

 private:
  std::map<WorkerKey, RefWorker> workers_;
};

uint64_t Mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct WorkerSpec {
  WorkerKey key;
  WorkerContext context;
  uint32_t block_size;
};

class DifferentialTest : public ::testing::Test {
 protected:
  static constexpr size_t kCap = 24;

  DifferentialTest() : index_(IndexOptions{.max_blocks_per_worker = kCap, .max_entries = 0, .shards = 4}) {
    specs_ = {
        {{"ns/p0", 0}, {"m", ""}, 2},  {{"ns/p1", 0}, {"m", ""}, 2},      {{"ns/p2", 0}, {"m", "a"}, 4},
        {{"ns/p3", 0}, {"m", ""}, 2},  {{"ns/p3", 1}, {"m", ""}, 2},      {{"ns/p4", 0}, {"m2", ""}, 2},
    };
    // Prompts share prefixes: each starts from one of a few "system prompts".
    std::vector<std::vector<uint32_t>> systems;
    for (int s = 0; s < 3; ++s) {
      std::vector<uint32_t> t;
      for (int i = 0; i < 8; ++i) t.push_back(static_cast<uint32_t>(1 + (rng_() % 5)));
      systems.push_back(t);
    }
    for (int p = 0; p < 12; ++p) {
      std::vector<uint32_t> t = systems[p % systems.size()];
      const int extra = 4 + static_cast<int>(rng_() % 20);
      for (int i = 0; i < extra; ++i) t.push_back(static_cast<uint32_t>(1 + (rng_() % 4)));
      prompts_.push_back(t);
    }
  }

  size_t Pick(size_t n) { return rng_() % n; }

  // The engine hash a worker gives block j of prompt p under LoRA l. Prompts
  // sharing a prefix get different engine hashes for identical blocks, which
  // exercises aliasing (several engine hashes for one index hash).
  static uint64_t EngineHash(const WorkerKey& w, size_t p, size_t j, const std::optional<std::string>& l) {
    return Mix(std::hash<std::string>()(w.pod) ^ Mix(w.dp_rank) ^ Mix(p * 1000 + j) ^ (l ? Mix(77) : 0));
  }

  std::optional<std::string> RandomMedium() {
    switch (Pick(4)) {
      case 0: return std::nullopt;
      case 1: return "GPU";
      case 2: return "CPU";
      default: return "GPU";
    }
  }

  Event RandomStored(const WorkerSpec& spec) {
    BlockStored s;
    const size_t p = Pick(prompts_.size());
    const std::vector<uint32_t>& prompt = prompts_[p];
    const size_t total = prompt.size() / spec.block_size;
    if (Pick(3) == 0) s.lora_name = Pick(2) ? std::optional<std::string>("a") : std::optional<std::string>("");
    // Mostly extend a chain the worker holds, as engines do; sometimes start anywhere.
    size_t start = Pick(total);
    for (int attempt = 0; attempt < 6 && start > 0; ++attempt) {
      auto w = ref_.workers().find(spec.key);
      if (w != ref_.workers().end() &&
          const_cast<RefWorker&>(w->second).Find(EngineHash(spec.key, p, start - 1, s.lora_name)) != nullptr) {
        break;
      }
      start = attempt < 2 ? 0 : Pick(total);
    }
    const size_t n = 1 + Pick(std::min<size_t>(4, total - start));
    s.block_size = spec.block_size;
    s.medium = RandomMedium();
    if (start > 0) s.parent_block_hash = EngineHash(spec.key, p, start - 1, s.lora_name);
    if (Pick(25) == 0) s.parent_block_hash = rng_();  // a parent nobody knows
    for (size_t j = start; j < start + n; ++j) {
      s.block_hashes.push_back(Pick(40) == 0 ? rng_() % 8 : EngineHash(spec.key, p, j, s.lora_name));
      s.token_ids.insert(s.token_ids.end(), prompt.begin() + j * spec.block_size,
                         prompt.begin() + (j + 1) * spec.block_size);
    }
    return s;
  }

  Event RandomRemoved(const WorkerSpec& spec) {
    BlockRemoved r;
    r.medium = RandomMedium();
    auto it = ref_.workers().find(spec.key);
    for (size_t i = 0, n = 1 + Pick(3); i < n; ++i) {
      if (it != ref_.workers().end() && !it->second.blocks.empty() && Pick(8) != 0) {
        auto b = it->second.blocks.begin();
        std::advance(b, Pick(it->second.blocks.size()));
        r.block_hashes.push_back(b->engine);
      } else {
        r.block_hashes.push_back(rng_());
      }
    }
    return r;
  }

  void Step() {
    const WorkerSpec& spec = specs_[Pick(specs_.size())];
    const size_t op = Pick(100);
    if (op < 3) {
      index_.RemoveWorker(spec.key);
      ref_.RemoveWorker(spec.key);
      return;
    }
    if (op < 4) {
      index_.RemovePod(spec.key.pod);
      ref_.RemovePod(spec.key.pod);
      return;
    }
    if (op < 6) {
      index_.ClearWorker(spec.key);
      ref_.ClearWorker(spec.key);
      return;
    }
    EventBatch batch;
    for (size_t i = 0, n = 1 + Pick(3); i < n; ++i) {
      const size_t kind = Pick(100);
      if (kind < 70) {
        batch.events.push_back(RandomStored(spec));
      } else if (kind < 98) {
        batch.events.push_back(RandomRemoved(spec));
      } else {
        batch.events.push_back(AllBlocksCleared{});
      }
    }
    const ApplyResult r = index_.Apply(spec.key, spec.context, batch);
    ref_.Apply(spec.key, spec.context, batch);
    const std::vector<uint64_t> held = index_.EngineHashes(spec.key);
    ASSERT_LE(held.size(), kCap);
    ASSERT_EQ(ref_.AdoptEvictions(spec.key, held), r.evictions);
    ASSERT_EQ(ref_.workers().at(spec.key).blocks.size(), held.size()) << "the index holds blocks the reference does not";
    seen_.unresolved_parents += r.unresolved_parents;
    seen_.evictions += r.evictions;
    seen_.blocks_removed += r.blocks_removed;
    seen_.clears += r.clears;
  }

  void Check(int step) {
    const IndexStats stats = index_.Stats();
    ASSERT_EQ(stats.entries, ref_.Entries()) << "step " << step;
    ASSERT_EQ(stats.blocks, ref_.Blocks()) << "step " << step;
    for (const auto& [key, w] : ref_.workers()) {
      auto ws = index_.GetWorkerStats(key);
      ASSERT_TRUE(ws.has_value()) << "step " << step;
      ASSERT_EQ(ws->blocks, w.blocks.size()) << "step " << step << " " << WorkerKeyString(key);
    }
    for (int q = 0; q < 3; ++q) {
      const std::string model = Pick(6) == 0 ? "m2" : "m";
      const std::string lora = Pick(4) == 0 ? "a" : "";
      std::vector<uint32_t> tokens = prompts_[Pick(prompts_.size())];
      tokens.resize(Pick(tokens.size() + 1));
      if (tokens.empty()) tokens.push_back(1);
      std::map<std::string, double> weights;
      if (Pick(2) == 0) weights = {{"GPU", 1.0}, {"CPU", 0.25}};
      MatchQuery query{.model = model, .lora_name = lora, .token_ids = tokens};
      for (const auto& [m, wt] : weights) query.medium_weights[m] = wt;
      auto got = index_.Match(query);
      ASSERT_TRUE(got.ok()) << got.status();
      std::map<WorkerKey, Reference::Answer> got_map;
      for (size_t i = 0; i < got->workers.size(); ++i) {
        const WorkerMatch& m = got->workers[i];
        Reference::Answer a{m.matched_blocks, m.matched_tokens, {}, m.score};
        for (const auto& [name, n] : m.blocks_by_medium) a.by_medium[name] = n;
        got_map[m.worker] = a;
        if (i > 0) {
          const WorkerMatch& prev = got->workers[i - 1];
          ASSERT_TRUE(prev.score > m.score || (prev.score == m.score && prev.matched_blocks >= m.matched_blocks))
              << "step " << step << ": not sorted best first";
        }
      }
      const auto want = ref_.Match(model, lora, tokens, weights);
      if (!want.empty()) ++nonempty_answers_;
      for (const auto& [key, a] : want) {
        if (a.by_medium.size() > 1) ++mixed_media_answers_;
      }
      ASSERT_EQ(got_map.size(), want.size()) << "step " << step << " query " << q;
      for (const auto& [key, a] : want) {
        auto it = got_map.find(key);
        ASSERT_NE(it, got_map.end()) << "step " << step << " missing " << WorkerKeyString(key);
        EXPECT_EQ(it->second.blocks, a.blocks) << "step " << step << " " << WorkerKeyString(key);
        EXPECT_EQ(it->second.tokens, a.tokens) << "step " << step << " " << WorkerKeyString(key);
        EXPECT_EQ(it->second.by_medium, a.by_medium) << "step " << step << " " << WorkerKeyString(key);
        EXPECT_DOUBLE_EQ(it->second.score, a.score) << "step " << step << " " << WorkerKeyString(key);
      }
    }
  }

  std::mt19937_64 rng_{20261127};
  std::vector<WorkerSpec> specs_;
  std::vector<std::vector<uint32_t>> prompts_;
  PrefixIndex index_;
  Reference ref_;
  // What the run exercised, so that a generator drifting into trivial cases fails loudly.
  ApplyResult seen_;
  int nonempty_answers_ = 0;
  int mixed_media_answers_ = 0;
};

TEST_F(DifferentialTest, TwelveThousandRandomOperationsAgreeWithTheNaiveModel) {
  for (int step = 0; step < 12000; ++step) {
    Step();
    Check(step);
    if (HasFatalFailure() || HasFailure()) return;
  }
  EXPECT_GT(nonempty_answers_, 10000);
  EXPECT_GT(mixed_media_answers_, 1000);
  EXPECT_GT(seen_.unresolved_parents, 100u);
  EXPECT_GT(seen_.evictions, 100u);
  EXPECT_GT(seen_.blocks_removed, 1000u);
  EXPECT_GT(seen_.clears, 50u);
  EXPECT_GT(index_.Stats().entries, 0u);
  std::cout << "exercised: " << nonempty_answers_ << " non-empty answers, " << mixed_media_answers_
            << " mixed-media, " << seen_.unresolved_parents << " unresolved parents, " << seen_.evictions
            << " evictions, " << seen_.blocks_removed << " removals, " << seen_.clears << " clears\n";
}

}  // namespace
}  // namespace kvindex
