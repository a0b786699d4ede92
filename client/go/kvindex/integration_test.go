package kvindex

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"kvindex.dev/client/go/indexhash"
	v1 "kvindex.dev/client/go/kvindexv1"
)

type simPrompts struct {
	Model   string `json:"model"`
	Prompts []struct {
		Label    string   `json:"label"`
		Tokens   []uint32 `json:"tokens"`
		Expected []struct {
			Pod           string `json:"pod"`
			DPRank        uint32 `json:"dp_rank"`
			MatchedBlocks uint32 `json:"matched_blocks"`
			BlockSize     uint32 `json:"block_size"`
		} `json:"expected"`
	} `json:"prompts"`
}

// describe is a Match answer's (pod, rank, blocks), sorted, for comparisons.
func describe(resp *v1.MatchResponse) string {
	var parts []string
	for _, m := range resp.GetPods() {
		parts = append(parts, fmt.Sprintf("%s#%d:%d", m.GetPod(), m.GetDpRank(), m.GetMatchedBlocks()))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// A real kvindex-server following kvindex-sim's pods answers Match by tokens
// as the sim's ground truth says, and Match by hashes computed in Go equals
// Match by tokens.
func TestMatchAgainstSim(t *testing.T) {
	sim := binPath(t, "kvindex-sim")
	dir := t.TempDir()
	podsFile := filepath.Join(dir, "pods.textproto")
	promptsFile := filepath.Join(dir, "prompts.json")
	simOut := start(t, sim, "--pods=2", "--base_port=0", "--block_size=16", "--requests=20", "--rate=0",
		"--keep_running", "--stats_interval=0", "--truth_interval=200ms", "--seed=7", "--cpu_capacity_blocks=64",
		"--capacity_blocks=48", "--pods_file="+podsFile, "--prompts_file="+promptsFile,
		"--truth_file="+filepath.Join(dir, "truth.json"))
	if simOut.waitFor("traffic done", 30*time.Second) == "" {
		t.Fatalf("kvindex-sim traffic did not finish; output:\n%s", simOut)
	}
	addr := startServer(t, "--pods_file="+podsFile)
	c := dial(t, addr, Options{})
	ctx := testContext(t, 60*time.Second)

	// The server catches up by replay; the prompts file is rewritten after the
	// traffic: compare until they agree (or the deadline).
	var prompts simPrompts
	var lastDiff string
	deadline := time.Now().Add(20 * time.Second)
	for {
		lastDiff = ""
		data, err := os.ReadFile(promptsFile)
		if err == nil {
			err = json.Unmarshal(data, &prompts)
		}
		if err != nil {
			lastDiff = err.Error()
		}
		for _, p := range prompts.Prompts {
			if lastDiff != "" {
				break
			}
			resp, err := c.MatchTokens(ctx, prompts.Model, "", p.Tokens)
			if err != nil {
				t.Fatalf("Match %s: %v", p.Label, err)
			}
			var want []string
			for _, e := range p.Expected {
				want = append(want, fmt.Sprintf("%s#%d:%d", e.Pod, e.DPRank, e.MatchedBlocks))
			}
			sort.Strings(want)
			if got := describe(resp); got != strings.Join(want, ",") {
				lastDiff = fmt.Sprintf("%s: server %q, sim %q", p.Label, got, strings.Join(want, ","))
			}
		}
		if lastDiff == "" && len(prompts.Prompts) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server never agreed with the sim: %s", lastDiff)
		}
		time.Sleep(100 * time.Millisecond)
	}

	matched := 0
	for _, p := range prompts.Prompts {
		byTokens, err := c.MatchTokens(ctx, prompts.Model, "", p.Tokens)
		if err != nil {
			t.Fatal(err)
		}
		hashes := indexhash.BlockHashes(prompts.Model, "", byTokens.GetBlockSize(), p.Tokens)
		byHashes, err := c.MatchHashes(ctx, prompts.Model, "", hashes)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(byTokens, byHashes) {
			t.Errorf("%s: Match by Go hashes %v != by tokens %v", p.Label, byHashes, byTokens)
		}
		if len(byTokens.GetPods()) > 0 {
			matched++
			best := Best(byTokens)
			top := byTokens.GetPods()[0]
			if best[0].MatchedBlocks != top.GetMatchedBlocks() || best[0].Score <= 0 || best[0].Score > 1 {
				t.Errorf("%s: Best %+v, top of the answer %v", p.Label, best[0], top)
			}
		}
		// Salted and multimodal queries: the Go hashes equal what the server derives.
		mm := []indexhash.MultimodalInput{{Identifier: "img-1", Offset: 3, Length: 20}}
		req := &v1.MatchRequest{Model: prompts.Model, TokenIds: p.Tokens, CacheSalt: "tenant",
			MmInputs: []*v1.MultimodalInput{{Identifier: "img-1", Offset: 3, Length: 20}}}
		salted, err := c.Match(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		saltedHashes, err := c.MatchHashes(ctx, prompts.Model, "",
			indexhash.QueryBlockHashes(prompts.Model, "", byTokens.GetBlockSize(), p.Tokens, "tenant", mm))
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(salted, saltedHashes) || len(salted.GetPods()) != 0 {
			t.Errorf("%s: salted Match %v, by hashes %v (the sim stores no salted block)", p.Label, salted, saltedHashes)
		}
	}
	if matched == 0 {
		t.Fatal("no prompt matched any pod: the test exercised nothing")
	}

	// Every MatchRequest field reaches the server: a pod filter and weights.
	p := prompts.Prompts[0]
	only, err := c.Match(ctx, &v1.MatchRequest{Model: prompts.Model, TokenIds: p.Tokens, Pods: []string{"default/sim-1"},
		MediumWeights: map[string]float64{"GPU": 1, "CPU": 0.5}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range only.GetPods() {
		if m.GetPod() != "default/sim-1" {
			t.Errorf("pod filter ignored: %v", only)
		}
	}

	pods, err := c.ListPods(ctx)
	if err != nil || len(pods) != 2 || pods[0].GetKey() != "default/sim-0" || !pods[1].GetSubscribed() {
		t.Fatalf("ListPods: %v, %v", pods, err)
	}
	stats, err := c.GetStats(ctx)
	if err != nil || stats.GetPods() != 2 || stats.GetMatches() == 0 {
		t.Fatalf("GetStats: %v, %v", stats, err)
	}
}

// Errors are the server's gRPC statuses, as the C++ client reports them.
func TestErrors(t *testing.T) {
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := startServer(t, "--auth_token_file="+tokenFile, "--auth_all_rpcs")
	ctx := testContext(t, 30*time.Second)

	anonymous := dial(t, addr, Options{})
	if _, err := anonymous.GetStats(ctx); status.Code(err) != codes.Unauthenticated {
		t.Errorf("no token: %v, want UNAUTHENTICATED", err)
	}
	wrong := dial(t, addr, Options{Token: "nope"})
	if _, err := wrong.SyncPods(ctx, []*v1.PodUpdate{{Update: &v1.PodUpdate_Delete{Delete: "a/b"}}}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("wrong token: %v, want UNAUTHENTICATED", err)
	}
	c := dial(t, addr, Options{Token: "s3cret"})
	if _, err := c.GetStats(ctx); err != nil {
		t.Fatalf("with the token: %v", err)
	}
	if _, err := c.MatchTokens(ctx, "", "", []uint32{1, 2}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("empty model: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := c.Match(ctx, &v1.MatchRequest{Model: "m"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("neither tokens nor hashes: %v, want INVALID_ARGUMENT", err)
	}
	resp, err := c.MatchTokens(ctx, "unknown-model", "", []uint32{1, 2, 3})
	if err != nil || len(resp.GetPods()) != 0 {
		t.Errorf("unknown model: %v, %v; want an empty OK answer", resp, err)
	}
	expired, cancel := contextWithDeadline(time.Now().Add(-time.Second))
	defer cancel()
	if _, err := c.GetStats(expired); status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("expired deadline: %v, want DEADLINE_EXCEEDED", err)
	}
	acks, err := c.SyncPods(ctx, []*v1.PodUpdate{{Update: &v1.PodUpdate_Upsert{Upsert: &v1.Pod{Name: "no-namespace"}}}})
	if err != nil || len(acks) != 1 || acks[0].GetOutcome() != v1.PodOutcome_POD_OUTCOME_REJECTED {
		t.Errorf("a pod without namespace: %v, %v; want one REJECTED ack", acks, err)
	}
	if _, err := Dial(addr, Options{CertFile: "x.pem"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("cert without key: %v, want INVALID_ARGUMENT", err)
	}
	if _, err := Dial(addr, Options{CAFile: "/nonexistent/ca.pem"}); status.Code(err) != codes.NotFound {
		t.Errorf("missing CA file: %v, want NOT_FOUND", err)
	}
}
