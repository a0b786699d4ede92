package indexhash

import (
	"encoding/binary"
	"fmt"
	"math"
)

// MultimodalInput is one multimodal input of a prompt (kvindex.v1.MultimodalInput):
// the identifier the engine hashed (the multi_modal_uuids entry the gateway
// sent to vLLM, or the engine's mm hash), the first token of its placeholder
// run and the run's length in tokens.
type MultimodalInput struct {
	Identifier string
	Offset     uint32
	Length     uint32
}

// QueryBlockHashes returns the index hashes a Match by token_ids with this
// cache_salt and these mm_inputs looks up, so a Match by these hashes answers
// the same. Each block gets the extra keys vLLM gives it: one
// [identifier, offset - block start] per input overlapping the block, in the
// order given, then cacheSalt (when not empty) on block 0. Without salt and
// inputs it equals BlockHashes.
func QueryBlockHashes(model, lora string, blockSize uint32, tokens []uint32, cacheSalt string,
	mmInputs []MultimodalInput) []uint64 {
	return keyedHashes(model, lora, blockSize, tokens, func(i int) []any {
		start := int64(i) * int64(blockSize)
		var keys []any
		for _, mm := range mmInputs {
			off, end := int64(mm.Offset), int64(mm.Offset)+int64(mm.Length)
			if off < start+int64(blockSize) && end > start {
				keys = append(keys, []any{mm.Identifier, off - start})
			}
		}
		if i == 0 && cacheSalt != "" {
			keys = append(keys, cacheSalt)
		}
		return keys
	})
}

// BlockHashesWithExtraKeys returns the index hashes of blocks an engine stored
// with extra keys (vLLM's BlockStored extra_keys): extraKeys[i] is block i's
// list (nil: none; a missing entry is none), in the engine's order. A leading
// item equal to lora is dropped (the seed already covers the LoRA), so a list
// holding only the LoRA name is no key. Items may be nil, string, []byte,
// signed or unsigned integers, and []any of these (nested); any other type is
// an error.
func BlockHashesWithExtraKeys(model, lora string, blockSize uint32, tokens []uint32, extraKeys [][]any) ([]uint64, error) {
	for i, k := range extraKeys {
		if _, err := appendKey(nil, k, 0); err != nil {
			return nil, fmt.Errorf("extra keys of block %d: %w", i, err)
		}
	}
	return keyedHashes(model, lora, blockSize, tokens, func(i int) []any {
		if i >= len(extraKeys) {
			return nil
		}
		k := extraKeys[i]
		if lora != "" && len(k) > 0 {
			if s, ok := k[0].(string); ok && s == lora {
				k = k[1:]
			}
		}
		return k
	}), nil
}

// EncodeKeys is enc(keys) of README "Index hash": the bytes hashed after a
// block's token hash.
func EncodeKeys(keys []any) ([]byte, error) { return appendKey(nil, keys, 0) }

// withKeys folds a block's (valid, non-empty) keys into its token hash.
func withKeys(h uint64, keys []any) uint64 {
	buf := binary.LittleEndian.AppendUint64(make([]byte, 0, 64), h)
	buf, err := appendKey(buf, keys, 0)
	if err != nil {
		panic("indexhash: keys were validated: " + err.Error())
	}
	return XXH3(buf)
}

// maxDepth bounds nesting, as the server bounds an event's extra keys.
const maxDepth = 8

func appendKey(buf []byte, item any, depth int) ([]byte, error) {
	switch v := item.(type) {
	case nil:
		return append(buf, 'n'), nil
	case string:
		buf = append(buf, 's')
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
		return append(buf, v...), nil
	case []byte:
		buf = append(buf, 'b')
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
		return append(buf, v...), nil
	case int:
		return appendInt(buf, int64(v)), nil
	case int8:
		return appendInt(buf, int64(v)), nil
	case int16:
		return appendInt(buf, int64(v)), nil
	case int32:
		return appendInt(buf, int64(v)), nil
	case int64:
		return appendInt(buf, v), nil
	case uint:
		return appendUint(buf, uint64(v)), nil
	case uint8:
		return appendUint(buf, uint64(v)), nil
	case uint16:
		return appendUint(buf, uint64(v)), nil
	case uint32:
		return appendUint(buf, uint64(v)), nil
	case uint64:
		return appendUint(buf, v), nil
	case []any:
		if depth >= maxDepth {
			return nil, fmt.Errorf("keys nested deeper than %d", maxDepth)
		}
		buf = append(buf, 'l')
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(v)))
		var err error
		for _, x := range v {
			if buf, err = appendKey(buf, x, depth+1); err != nil {
				return nil, err
			}
		}
		return buf, nil
	default:
		return nil, fmt.Errorf("unsupported key type %T", item)
	}
}

func appendInt(buf []byte, v int64) []byte {
	buf = append(buf, 'i')
	return binary.LittleEndian.AppendUint64(buf, uint64(v))
}

// appendUint encodes an unsigned value: 'i' while it fits an int64, else 'u'.
func appendUint(buf []byte, v uint64) []byte {
	if v > math.MaxInt64 {
		buf = append(buf, 'u')
		return binary.LittleEndian.AppendUint64(buf, v)
	}
	return appendInt(buf, int64(v))
}
