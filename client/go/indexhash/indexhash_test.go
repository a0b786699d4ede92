package indexhash

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// sourceDir is the kvindex checkout: KVINDEX_SOURCE_DIR, else three levels up.
func sourceDir() string {
	if d := os.Getenv("KVINDEX_SOURCE_DIR"); d != "" {
		return d
	}
	return filepath.Join("..", "..", "..")
}

type vectorCase struct {
	Name      string            `json:"name"`
	Model     string            `json:"model"`
	LoraName  string            `json:"lora_name"`
	BlockSize uint32            `json:"block_size"`
	TokenIDs  []uint32          `json:"token_ids"`
	ExtraKeys []json.RawMessage `json:"extra_keys"`
	CacheSalt string            `json:"cache_salt"`
	MMInputs  []MultimodalInput `json:"-"`
	RawMM     []struct {
		Identifier string `json:"identifier"`
		Offset     uint32 `json:"offset"`
		Length     uint32 `json:"length"`
	} `json:"mm_inputs"`
	Hashes []string `json:"hashes"`
}

func readCases(t *testing.T, path string) []vectorCase {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading vectors: %v", err)
	}
	var doc struct {
		Cases []vectorCase `json:"cases"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if len(doc.Cases) == 0 {
		t.Fatalf("%s has no cases", path)
	}
	for i := range doc.Cases {
		for _, mm := range doc.Cases[i].RawMM {
			doc.Cases[i].MMInputs = append(doc.Cases[i].MMInputs, MultimodalInput{mm.Identifier, mm.Offset, mm.Length})
		}
	}
	return doc.Cases
}

func hexHashes(hs []uint64) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = fmt.Sprintf("0x%016x", h)
	}
	return out
}

func normalise(hs []string) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		v, err := strconv.ParseUint(strings.TrimPrefix(h, "0x"), 16, 64)
		if err != nil {
			return hs
		}
		out[i] = fmt.Sprintf("0x%016x", v)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// ../shared/wire/index_hash_vectors.json: golden values computed outside the project.
func TestIndexHashVectors(t *testing.T) {
	dir := os.Getenv("KVINDEX_WIRE_DIR")
	if dir == "" {
		dir = filepath.Join(sourceDir(), "..", "shared", "wire")
	}
	path := filepath.Join(dir, "index_hash_vectors.json")
	if _, err := os.Stat(path); err != nil {
		if os.Getenv("KVINDEX_REQUIRE_WIRE") != "" {
			t.Fatalf("no wire vectors at %s (set KVINDEX_WIRE_DIR)", path)
		}
		t.Skipf("no wire vectors at %s: clone kvindex beside shared/ or set KVINDEX_WIRE_DIR", path)
	}
	for i, c := range readCases(t, path) {
		got := hexHashes(BlockHashes(c.Model, c.LoraName, c.BlockSize, c.TokenIDs))
		if want := normalise(c.Hashes); !equal(got, want) {
			t.Errorf("case %d (%q, %q, %d): got %v, want %v", i, c.Model, c.LoraName, c.BlockSize, got, want)
		}
	}
}

// decodeKey turns a vector's JSON key into what BlockHashesWithExtraKeys takes:
// "0x…" strings are bytes, integers stay exact (int64, or uint64 past it).
func decodeKey(t *testing.T, v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		if strings.HasPrefix(x, "0x") {
			b, err := hex.DecodeString(x[2:])
			if err != nil {
				t.Fatalf("bad bytes key %q", x)
			}
			return b
		}
		return x
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		u, err := strconv.ParseUint(x.String(), 10, 64)
		if err != nil {
			t.Fatalf("bad int key %q", x)
		}
		return u
	case []any:
		out := make([]any, len(x))
		for i, y := range x {
			out[i] = decodeKey(t, y)
		}
		return out
	}
	t.Fatalf("unexpected key %T", v)
	return nil
}

// tests/testdata/extra_keys_hash_vectors.json: engine keys and query inputs,
// computed with python3-xxhash by scripts/lib/extra_keys_hash_vectors.py.
func TestExtraKeysHashVectors(t *testing.T) {
	cases := readCases(t, filepath.Join(sourceDir(), "tests", "testdata", "extra_keys_hash_vectors.json"))
	for _, c := range cases {
		var got []uint64
		if c.ExtraKeys != nil {
			keys := make([][]any, len(c.ExtraKeys))
			for i, raw := range c.ExtraKeys {
				dec := json.NewDecoder(bytes.NewReader(raw))
				dec.UseNumber()
				var v any
				if err := dec.Decode(&v); err != nil {
					t.Fatalf("%s: %v", c.Name, err)
				}
				if v != nil {
					keys[i] = decodeKey(t, v).([]any)
				}
			}
			var err error
			if got, err = BlockHashesWithExtraKeys(c.Model, c.LoraName, c.BlockSize, c.TokenIDs, keys); err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
		} else {
			got = QueryBlockHashes(c.Model, c.LoraName, c.BlockSize, c.TokenIDs, c.CacheSalt, c.MMInputs)
		}
		if want := normalise(c.Hashes); !equal(hexHashes(got), want) {
			t.Errorf("%s: got %v, want %v", c.Name, hexHashes(got), want)
		}
	}
}

func TestNoKeysIsTheTokenHash(t *testing.T) {
	tokens := []uint32{1, 2, 3, 4, 5, 6, 7}
	plain := BlockHashes("m", "l", 3, tokens)
	if len(plain) != 2 {
		t.Fatalf("want 2 full blocks, got %d", len(plain))
	}
	if q := QueryBlockHashes("m", "l", 3, tokens, "", nil); !equal(hexHashes(q), hexHashes(plain)) {
		t.Errorf("query without keys %v != %v", q, plain)
	}
	if BlockHashes("m", "", 0, tokens) != nil || BlockHashes("m", "", 8, tokens) != nil {
		t.Error("block size 0 or no full block must give no hash")
	}
	if _, err := BlockHashesWithExtraKeys("m", "", 3, tokens, [][]any{{3.5}}); err == nil {
		t.Error("a float key must be refused")
	}
}
