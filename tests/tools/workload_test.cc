#include "tools/sim/workload.h"

#include <algorithm>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvindex::sim {
namespace {

using Tokens = std::vector<uint32_t>;

bool StartsWith(const Tokens& tokens, const Tokens& prefix) {
  return tokens.size() >= prefix.size() && std::equal(prefix.begin(), prefix.end(), tokens.begin());
}

std::vector<Tokens> Take(Workload& w, size_t n) {
  std::vector<Tokens> out;
  for (size_t i = 0; i < n; ++i) {
    const auto p = w.Next();
    out.emplace_back(p.begin(), p.end());
  }
  return out;
}

WorkloadOptions Small() {
  WorkloadOptions o;
  o.seed = 7;
  o.system_prompts = 3;
  o.system_prompt_tokens = 40;
  o.conversations = 4;
  o.turn_tokens = 10;
  o.max_turns = 4;
  o.vocab_size = 1000;
  return o;
}

TEST(WorkloadTest, SameSeedAndStreamGiveTheSamePrompts) {
  Workload a(Small()), b(Small());
  EXPECT_EQ(Take(a, 50), Take(b, 50));
}

TEST(WorkloadTest, StreamsShareSystemPromptsButNotConversations) {
  WorkloadOptions other = Small();
  other.stream = 1;
  EXPECT_EQ(MakeSystemPrompts(Small()), MakeSystemPrompts(other));
  Workload a(Small()), b(other);
  EXPECT_NE(Take(a, 20), Take(b, 20));
  WorkloadOptions reseeded = Small();
  reseeded.seed = 8;
  EXPECT_NE(MakeSystemPrompts(Small()), MakeSystemPrompts(reseeded));
}

TEST(WorkloadTest, EveryPromptStartsWithASystemPromptAndAllAreUsed) {
  const auto systems = MakeSystemPrompts(Small());
  ASSERT_EQ(systems.size(), 3u);
  Workload w(Small());
  std::vector<int> uses(systems.size());
  for (const Tokens& p : Take(w, 200)) {
    int matched = 0;
    for (size_t s = 0; s < systems.size(); ++s) {
      if (StartsWith(p, systems[s])) ++uses[s], ++matched;
    }
    EXPECT_EQ(matched, 1);
    EXPECT_GT(p.size(), 40u);
  }
  EXPECT_THAT(uses, ::testing::Each(::testing::Gt(10)));
}

TEST(WorkloadTest, TurnsExtendTheConversationUntilMaxTurns) {
  WorkloadOptions o = Small();
  o.conversations = 1;
  o.max_turns = 3;
  Workload w(o);
  const auto p = Take(w, 7);
  // Turns 1-3 of the first conversation each extend the previous prompt by 5..15 tokens.
  for (int i : {1, 2}) {
    EXPECT_TRUE(StartsWith(p[i], p[i - 1])) << i;
    EXPECT_GE(p[i].size() - p[i - 1].size(), 5u);
    EXPECT_LE(p[i].size() - p[i - 1].size(), 15u);
  }
  // Then a new conversation starts from a system prompt.
  EXPECT_FALSE(StartsWith(p[3], p[2]));
  EXPECT_TRUE(StartsWith(p[4], p[3]));
}

TEST(WorkloadTest, WithoutSystemPromptsAndOneTurnPromptsShareNothing) {
  WorkloadOptions o = Small();
  o.system_prompts = 0;
  o.max_turns = 1;
  o.turn_tokens = 64;
  o.vocab_size = 1 << 30;
  Workload w(o);
  const auto p = Take(w, 20);
  for (size_t i = 1; i < p.size(); ++i) EXPECT_NE(p[i][0], p[i - 1][0]);
}

TEST(WorkloadTest, SamplesExtendLivePromptsWithoutChangingTheSequence) {
  Workload a(Small()), b(Small());
  const auto before = Take(a, 30);
  Take(b, 30);
  Rng rng(99);
  const auto convs = a.SampleConversations(2, rng);
  ASSERT_EQ(convs.size(), 2u);
  for (const SamplePrompt& s : convs) {
    EXPECT_THAT(s.label, ::testing::StartsWith("conversation-0-"));
    // Some earlier prompt of that conversation is a prefix of the sample.
    EXPECT_TRUE(std::any_of(before.begin(), before.end(), [&](const Tokens& p) { return StartsWith(s.tokens, p); }));
  }
  const auto shared = a.SampleShared(rng);
  ASSERT_EQ(shared.size(), 4u);  // 3 system prompts + novel
  const auto systems = MakeSystemPrompts(Small());
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(shared[i].label, "system-" + std::to_string(i));
    EXPECT_TRUE(StartsWith(shared[i].tokens, systems[i]));
    EXPECT_GT(shared[i].tokens.size(), systems[i].size());
  }
  EXPECT_EQ(shared[3].label, "novel");
  EXPECT_EQ(Take(a, 10), Take(b, 10));
}

// The sample covers every kind of prompt the workload makes: however few
// conversations are multimodal or salted, one of each is sampled while live.
TEST(WorkloadTest, SamplesTakeAMultimodalAndASaltedConversationWhenAnyIsLive) {
  WorkloadOptions o = Small();
  o.conversations = 12;
  o.mm_fraction = 0.1;
  o.salted_tenants = 1;
  Workload w(o);
  Take(w, 200);
  for (uint64_t seed = 0; seed < 50; ++seed) {
    Rng rng(seed);
    const std::vector<SamplePrompt> sample = w.SampleConversations(2, rng);
    ASSERT_EQ(sample.size(), 2u);
    EXPECT_TRUE(std::any_of(sample.begin(), sample.end(), [](const SamplePrompt& p) { return !p.keys.mm_inputs.empty(); }))
        << seed;
    EXPECT_TRUE(std::any_of(sample.begin(), sample.end(), [](const SamplePrompt& p) { return !p.keys.cache_salt.empty(); }))
        << seed;
  }
}

}  // namespace
}  // namespace kvindex::sim
