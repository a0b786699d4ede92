// Command gateway is one routing step of a gateway using kvindex: for a
// request's token ids, Match, combine the normalised prefix score with a
// per-pod load signal, pick a pod, and tell kvindex where the request went
// (RecordRouting: a routing hint, so the next requests sharing the prefix see
// it before the engine's events arrive; --hint=false to skip).
//
//	go run ./examples/gateway --server localhost:50051 --model sim-model \
//	    --tokens 1,2,3,... --load default/sim-0=0.9,default/sim-1=0.1
//
// Against `scripts/run --demo`, take the server address from its output and a
// prompt's tokens from kvindex-sim's --prompts_file.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"kvindex.dev/client/go/indexhash"
	"kvindex.dev/client/go/kvindex"
)

func main() {
	server := flag.String("server", "localhost:50051", "kvindex-server host:port")
	model := flag.String("model", "", "served model name")
	lora := flag.String("lora", "", "LoRA adapter name")
	tokens := flag.String("tokens", "", "the request's token ids, comma-separated")
	load := flag.String("load", "", "per-pod load in [0,1], POD=LOAD,... (the candidates)")
	prefixWeight := flag.Float64("prefix_weight", 0.7, "weight of the prefix score against (1 - load)")
	token := flag.String("token", os.Getenv("KVINDEX_TOKEN"), "bearer token")
	byHashes := flag.Bool("hashes", false, "send index hashes computed here instead of tokens (needs --block_size)")
	blockSize := flag.Uint("block_size", 16, "block size for --hashes")
	hint := flag.Bool("hint", true, "tell kvindex where the request went (RecordRouting): its blocks match as SPECULATIVE on that pod until the engine confirms them")
	flag.Parse()

	ids, err := parseTokens(*tokens)
	if err != nil || *model == "" || *load == "" {
		fmt.Fprintln(os.Stderr, "usage: gateway --model M --tokens 1,2,... --load pod=0.5,... [--server H:P]", err)
		os.Exit(2)
	}
	loads, err := parseLoads(*load)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	c, err := kvindex.Dial(*server, kvindex.Options{Token: *token, Timeout: 2 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer c.Close()

	ctx := context.Background()
	var scores map[string]float64
	if *byHashes {
		resp, err := c.MatchHashes(ctx, *model, *lora, indexhash.BlockHashes(*model, *lora, uint32(*blockSize), ids))
		if err != nil {
			fmt.Fprintln(os.Stderr, "match:", err) // a gateway falls back to load alone
		} else {
			scores = kvindex.Scores(resp)
		}
	} else {
		resp, err := c.MatchTokens(ctx, *model, *lora, ids)
		if err != nil {
			fmt.Fprintln(os.Stderr, "match:", err)
		} else {
			scores = kvindex.Scores(resp)
		}
	}
	best, bestScore := "", -1.0
	for pod, l := range loads {
		s := *prefixWeight*scores[pod] + (1-*prefixWeight)*(1-l)
		fmt.Printf("%-30s prefix %.3f load %.2f -> %.3f\n", pod, scores[pod], l, s)
		if s > bestScore || (s == bestScore && pod < best) {
			best, bestScore = pod, s
		}
	}
	fmt.Printf("route to %s\n", best)
	if *hint && best != "" {
		// Best effort: a gateway routes whether or not the hint lands.
		if r, err := c.RecordRoutingTokens(ctx, *model, *lora, best, 0, ids); err != nil {
			fmt.Fprintln(os.Stderr, "record routing:", err)
		} else {
			fmt.Printf("hinted %d blocks to %s (ttl %d ms)\n", r.GetBlocks(), best, r.GetTtlMs())
		}
	}
}

func parseTokens(s string) ([]uint32, error) {
	var out []uint32
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		v, err := strconv.ParseUint(f, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("token %q: %v", f, err)
		}
		out = append(out, uint32(v))
	}
	return out, nil
}

func parseLoads(s string) (map[string]float64, error) {
	out := map[string]float64{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		l, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("--load entry %q: want POD=LOAD", kv)
		}
		out[k] = l
	}
	return out, nil
}
