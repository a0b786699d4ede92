package kvindex

import (
	"sort"

	v1 "kvindex.dev/client/go/kvindexv1"
)

// Ranked is one pod's place in a Match answer.
type Ranked struct {
	// "namespace/name".
	Pod string
	// The pod's best data-parallel rank (the engine to send to when a
	// gateway routes by rank).
	DPRank uint32
	// Score normalised by the query: the server's score (matched blocks
	// weighted by tier: per block the highest medium weight holding it, 1 for
	// a tier the request did not weigh) divided by the query's full blocks.
	// In [0, 1] when no weight exceeds 1; 0 when the query has no full block.
	Score float64
	// Leading blocks and tokens matched by that rank.
	MatchedBlocks uint32
	MatchedTokens uint32
}

// Best turns a MatchResponse into a ranking a scorer can use, as llm-d's
// prefix scorer does: one entry per pod (its best dp rank), the normalised
// score, best first; ties broken by more matched blocks, then pod key, so the
// order is deterministic. Pods absent from the answer hold no block of the
// prompt: a scorer gives them 0.
func Best(resp *v1.MatchResponse) []Ranked {
	byPod := map[string]Ranked{}
	q := float64(resp.GetQueryBlocks())
	for _, m := range resp.GetPods() {
		r := Ranked{Pod: m.GetPod(), DPRank: m.GetDpRank(), MatchedBlocks: m.GetMatchedBlocks(), MatchedTokens: m.GetMatchedTokens()}
		if q > 0 {
			r.Score = m.GetScore() / q
		}
		if old, ok := byPod[r.Pod]; !ok || better(r, old) {
			byPod[r.Pod] = r
		}
	}
	out := make([]Ranked, 0, len(byPod))
	for _, r := range byPod {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return better(out[i], out[j]) })
	return out
}

func better(a, b Ranked) bool {
	if a.Score != b.Score {
		return a.Score > b.Score
	}
	if a.MatchedBlocks != b.MatchedBlocks {
		return a.MatchedBlocks > b.MatchedBlocks
	}
	if a.Pod != b.Pod {
		return a.Pod < b.Pod
	}
	return a.DPRank < b.DPRank
}

// Scores is Best as a map pod -> normalised score, the shape a scheduler's
// scorer plugin returns.
func Scores(resp *v1.MatchResponse) map[string]float64 {
	out := map[string]float64{}
	for _, r := range Best(resp) {
		out[r.Pod] = r.Score
	}
	return out
}
