package kvindex

import (
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "kvindex.dev/client/go/kvindexv1"
)

// RecordRouting against a real kvindex-server: a pod without KV events gets
// its hinted blocks as the tier SPECULATIVE, kept without a TTL; an unknown
// pod is NotFound.
func TestRecordRouting(t *testing.T) {
	addr := startServer(t)
	c := dial(t, addr, Options{Timeout: 5 * time.Second})
	ctx := testContext(t, 5*time.Second)
	off := false
	pod := &v1.Pod{Namespace: "ns", Name: "silent", Ip: "127.0.0.1", Phase: "Running", Model: "m",
		KvEventsEnabledPresence: &v1.Pod_KvEventsEnabled{KvEventsEnabled: off}}
	if _, err := c.SyncPods(ctx, []*v1.PodUpdate{{Update: &v1.PodUpdate_Upsert{Upsert: pod}}}); err != nil {
		t.Fatalf("SyncPods: %v", err)
	}
	tokens := make([]uint32, 40)
	for i := range tokens {
		tokens[i] = uint32(i)
	}
	resp, err := c.RecordRoutingTokens(ctx, "m", "", "ns/silent", 0, tokens)
	if err != nil || resp.GetBlocks() != 2 || resp.GetTtlMs() != 0 {
		t.Fatalf("RecordRouting: %v, %v; want 2 blocks (16 tokens each), no TTL", resp, err)
	}
	match, err := c.MatchTokens(ctx, "m", "", tokens)
	if err != nil || len(match.GetPods()) != 1 || match.GetPods()[0].GetBlocksByMedium()["SPECULATIVE"] != 2 {
		t.Errorf("Match after RecordRouting: %v, %v; want ns/silent with 2 SPECULATIVE blocks", match, err)
	}
	if _, err := c.RecordRoutingTokens(ctx, "m", "", "ns/nobody", 0, tokens); status.Code(err) != codes.NotFound {
		t.Errorf("RecordRouting to an unknown pod: %v, want NotFound", err)
	}
}
