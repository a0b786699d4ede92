package kvindex

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "kvindex.dev/client/go/kvindexv1"
)

func pod(name, phase string) *v1.Pod {
	return &v1.Pod{Namespace: "ns", Name: name, Ip: "127.0.0.1", Phase: phase, Model: "m"}
}

// serverPods is the server's pod set, key -> phase.
func serverPods(t *testing.T, c *Client, ctx context.Context) map[string]string {
	t.Helper()
	pods, err := c.ListPods(ctx)
	if err != nil {
		t.Fatalf("ListPods: %v", err)
	}
	out := map[string]string{}
	for _, p := range pods {
		out[p.GetKey()] = p.GetPod().GetPhase()
	}
	return out
}

func desiredPods(s *PodSyncer) map[string]string {
	out := map[string]string{}
	for _, p := range s.Desired() {
		out[PodKey(p)] = p.GetPhase()
	}
	return out
}

func same(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// The syncer's stream is cut (twice) while pods change: after each reconnect
// the server holds exactly the desired set; rejected pods are surfaced.
func TestPodSyncerReconnects(t *testing.T) {
	addr := startServer(t)
	direct := dial(t, addr, Options{})
	ctx := testContext(t, 60*time.Second)

	// A pod the control plane no longer wants: the first snapshot removes it.
	if _, err := direct.SyncPods(ctx, []*v1.PodUpdate{{Update: &v1.PodUpdate_Upsert{Upsert: pod("stale", "Running")}}}); err != nil {
		t.Fatal(err)
	}

	px := startProxy(t, addr)
	viaProxy := dial(t, px.addr(), Options{})
	var mu sync.Mutex
	var rejected []string
	s := NewPodSyncer(viaProxy, SyncerOptions{MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		OnRejected: func(p, reason string) { mu.Lock(); rejected = append(rejected, p+": "+reason); mu.Unlock() }})
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- s.Run(runCtx) }()

	handler := InformerHandler{Syncer: s, Convert: func(obj any) (*v1.Pod, bool) { p, ok := obj.(*v1.Pod); return p, ok }}
	handler.OnAdd(pod("a", "Running"), true)
	handler.OnAdd(pod("b", "Running"), true)
	handler.OnAdd(pod("c", "Pending"), true)
	if s.Synced() {
		t.Fatal("synced before Ready")
	}
	s.Ready()
	check := func(step string) {
		t.Helper()
		if err := s.WaitSynced(ctx); err != nil {
			t.Fatalf("%s: not synced: %v", step, err)
		}
		if got, want := serverPods(t, direct, ctx), desiredPods(s); !same(got, want) {
			t.Fatalf("%s: server %v, desired %v", step, got, want)
		}
	}
	check("first snapshot")

	// Changes while the connection is being cut: they reach the server on the next stream.
	px.cut()
	handler.OnDelete(pod("b", "Running"))
	handler.OnUpdate(pod("a", "Running"), pod("a", "Failed"))
	handler.OnAdd(pod("d", "Running"), false)
	check("after the first cut")

	for i := 0; i < 20; i++ {
		s.Upsert(pod("e", []string{"Running", "Pending"}[i%2]))
		if i == 10 {
			px.cut()
		}
	}
	s.Delete("ns/c")
	check("after the second cut")

	// A pod the server rejects (no namespace) is surfaced, and forgotten once deleted.
	s.Upsert(&v1.Pod{Name: "bad"})
	if err := s.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	if r := s.Rejected(); len(r) != 1 {
		t.Fatalf("Rejected() = %v, want the pod without namespace", r)
	}
	mu.Lock()
	if len(rejected) == 0 || !strings.Contains(strings.Join(rejected, "\n"), "namespace") {
		t.Errorf("OnRejected got %v", rejected)
	}
	mu.Unlock()
	s.Delete("/bad")
	check("after deleting the rejected pod")
	if r := s.Rejected(); len(r) != 0 {
		t.Errorf("Rejected() = %v after the delete", r)
	}

	px.mu.Lock()
	if px.accepted < 3 {
		t.Errorf("the syncer connected %d times, want a reconnect after each of 2 cuts", px.accepted)
	}
	px.mu.Unlock()
	stop()
	if err := <-done; err != context.Canceled {
		t.Errorf("Run returned %v", err)
	}
	keys := make([]string, 0)
	for k := range desiredPods(s) {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != "ns/a,ns/d,ns/e" {
		t.Errorf("desired %v", keys)
	}
}

func TestBest(t *testing.T) {
	resp := &v1.MatchResponse{BlockSize: 16, QueryBlocks: 4, Pods: []*v1.PodMatch{
		{Pod: "ns/x", DpRank: 1, MatchedBlocks: 4, Score: 3},
		{Pod: "ns/y", DpRank: 0, MatchedBlocks: 2, Score: 2},
		{Pod: "ns/x", DpRank: 0, MatchedBlocks: 1, Score: 1},
		{Pod: "ns/z", DpRank: 0, MatchedBlocks: 3, Score: 2},
	}}
	got := Best(resp)
	if len(got) != 3 || got[0].Pod != "ns/x" || got[0].DPRank != 1 || got[0].Score != 0.75 ||
		got[1].Pod != "ns/z" || got[2].Pod != "ns/y" || got[2].Score != 0.5 {
		t.Errorf("Best = %+v", got)
	}
	if s := Scores(resp); s["ns/x"] != 0.75 || s["ns/y"] != 0.5 {
		t.Errorf("Scores = %v", s)
	}
	if len(Best(&v1.MatchResponse{})) != 0 {
		t.Error("an empty answer ranks nobody")
	}
}
