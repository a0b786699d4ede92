// Package indexhash computes kvindex's index hashes (README "Index hash"), so
// a gateway can send block_hashes in a Match instead of token ids, or key its
// own caches the way kvindex does.
//
//	seed = XXH3_64bits(model || 0x00 || lora || 0x00 || LE32(block_size))
//	h[0] = XXH3_64bits(LE64(seed)   || LE32(t[0])  || ... || LE32(t[B-1]))
//	h[i] = XXH3_64bits(LE64(h[i-1]) || LE32(t[iB]) || ... || LE32(t[iB+B-1]))
//
// Blocks with extra keys (multimodal inputs, a cache salt) are then keyed:
// h'[i] = XXH3_64bits(LE64(h[i]) || enc(K)) and block i+1 chains from h'[i].
//
// XXH3 comes from libxxhash through cgo, the library kvindex-server links,
// so both sides hash byte for byte alike (Debian ships no Go XXH3).
//
// Every function is safe for concurrent use.
package indexhash

// #cgo LDFLAGS: -lxxhash
// #include <stdint.h>
// #include <stdlib.h>
// #include <xxhash.h>
//
// static uint64_t kvindex_xxh3(const void* data, size_t len) { return XXH3_64bits(data, len); }
import "C"

import (
	"encoding/binary"
	"unsafe"
)

// XXH3 is xxHash's XXH3_64bits of data (default secret, seed 0).
func XXH3(data []byte) uint64 {
	if len(data) == 0 {
		return uint64(C.kvindex_xxh3(nil, 0))
	}
	return uint64(C.kvindex_xxh3(unsafe.Pointer(&data[0]), C.size_t(len(data))))
}

// Seed is the hash of the context: model, LoRA name ("" for none), block size.
func Seed(model, lora string, blockSize uint32) uint64 {
	buf := make([]byte, 0, len(model)+len(lora)+6)
	buf = append(buf, model...)
	buf = append(buf, 0)
	buf = append(buf, lora...)
	buf = append(buf, 0)
	buf = binary.LittleEndian.AppendUint32(buf, blockSize)
	return XXH3(buf)
}

// chain hashes one block's tokens onto its parent's hash; buf is scratch space.
func chain(parent uint64, tokens []uint32, buf []byte) uint64 {
	buf = binary.LittleEndian.AppendUint64(buf[:0], parent)
	for _, t := range tokens {
		buf = binary.LittleEndian.AppendUint32(buf, t)
	}
	return XXH3(buf)
}

// BlockHashes returns the index hashes of the full blocks of tokens (a
// partial last block is not hashed) for a prompt without extra keys: what a
// Match by token_ids without cache_salt or mm_inputs looks up. Nil when
// blockSize is 0 or there is no full block.
func BlockHashes(model, lora string, blockSize uint32, tokens []uint32) []uint64 {
	return keyedHashes(model, lora, blockSize, tokens, nil)
}

// keyedHashes chains the blocks, folding keys(i) (nil or empty: none) into block i.
func keyedHashes(model, lora string, blockSize uint32, tokens []uint32, keys func(i int) []any) []uint64 {
	if blockSize == 0 {
		return nil
	}
	n := len(tokens) / int(blockSize)
	if n == 0 {
		return nil
	}
	out := make([]uint64, n)
	buf := make([]byte, 0, 8+4*int(blockSize))
	h := Seed(model, lora, blockSize)
	for i := 0; i < n; i++ {
		h = chain(h, tokens[i*int(blockSize):(i+1)*int(blockSize)], buf)
		if keys != nil {
			if k := keys(i); len(k) > 0 {
				h = withKeys(h, k)
			}
		}
		out[i] = h
	}
	return out
}
