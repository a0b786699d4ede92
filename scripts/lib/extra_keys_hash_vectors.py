#!/usr/bin/python3
"""Writes tests/testdata/extra_keys_hash_vectors.json: index hashes of blocks with extra keys,
computed from README "Index hash" with Debian's python3-xxhash, independently of the C++ code.

Each case is a prompt (model, lora_name, block_size, token_ids) with either the extra keys an engine
sent per block ("extra_keys", as in a BlockStored event: null or a list per block) or what a gateway
sends in Match ("cache_salt", "mm_inputs"); "hashes" are the index hashes of its full blocks.
Usage: /usr/bin/python3 scripts/lib/extra_keys_hash_vectors.py > tests/testdata/extra_keys_hash_vectors.json
"""
import json
import struct
import sys

import xxhash


def h64(data):
    return xxhash.xxh3_64_intdigest(data)


def seed(model, lora, block_size):
    return h64(model.encode() + b"\0" + lora.encode() + b"\0" + struct.pack("<I", block_size))


def token_hash(parent, tokens):
    return h64(struct.pack("<Q", parent) + b"".join(struct.pack("<I", t) for t in tokens))


def enc(item):
    if item is None:
        return b"n"
    if isinstance(item, str):
        b = item.encode()
        return b"s" + struct.pack("<I", len(b)) + b
    if isinstance(item, bytes):
        return b"b" + struct.pack("<I", len(item)) + item
    if isinstance(item, int):
        if item >= 2**63:
            return b"u" + struct.pack("<Q", item)
        return b"i" + struct.pack("<q", item)
    if isinstance(item, list):
        return b"l" + struct.pack("<I", len(item)) + b"".join(enc(x) for x in item)
    raise TypeError(item)


def keyed(h, keys):
    return h if not keys else h64(struct.pack("<Q", h) + enc(keys))


def event_keys(entry, lora):
    if entry is None:
        return []
    if lora and entry and entry[0] == lora:
        entry = entry[1:]
    return list(entry)


def query_keys(mm_inputs, salt, start, block_size):
    keys = []
    for mm in mm_inputs:
        if mm["offset"] < start + block_size and mm["offset"] + mm["length"] > start:
            keys.append([mm["identifier"], mm["offset"] - start])
    if start == 0 and salt:
        keys.append(salt)
    return keys


def hashes(case):
    bs, toks, lora = case["block_size"], case["token_ids"], case["lora_name"]
    h = seed(case["model"], lora, bs)
    out = []
    for i in range(len(toks) // bs):
        h = token_hash(h, toks[i * bs:(i + 1) * bs])
        if "extra_keys" in case:
            entries = case["extra_keys"]
            h = keyed(h, event_keys(entries[i] if i < len(entries) else None, lora))
        else:
            h = keyed(h, query_keys(case.get("mm_inputs", []), case.get("cache_salt", ""), i * bs, bs))
        out.append("0x%016x" % h)
    return out


def to_json(item):
    if isinstance(item, bytes):
        return "0x" + item.hex()
    if isinstance(item, list):
        return [to_json(x) for x in item]
    return item


IMG = [9, 32000, 32000, 32000, 32000, 32000, 7, 8]
CASES = [
    {"name": "no_keys_is_the_token_hash", "model": "m", "lora_name": "", "block_size": 2,
     "token_ids": [1, 2, 3, 4], "extra_keys": [None, None]},
    {"name": "lora_name_alone_is_no_key", "model": "m", "lora_name": "sql-adapter", "block_size": 2,
     "token_ids": [1, 2, 3, 4], "extra_keys": [["sql-adapter"], ["sql-adapter"]]},
    {"name": "vllm_image_and_salt", "model": "m", "lora_name": "sql-adapter", "block_size": 2,
     "token_ids": [9, 32000, 32000, 32000],
     "extra_keys": [["sql-adapter", ["img-7f3a", 1], "tenant-salt"], ["sql-adapter", ["img-7f3a", -1]]]},
    {"name": "every_item_kind", "model": "m", "lora_name": "", "block_size": 1, "token_ids": [5, 6],
     "extra_keys": [[b"defghijk", -3, 2**64 - 1, None, [["nested", 0]]], None]},
    {"name": "query_image_over_three_blocks", "model": "mm-model", "lora_name": "", "block_size": 2,
     "token_ids": IMG, "mm_inputs": [{"identifier": "img-a", "offset": 1, "length": 5}]},
    {"name": "query_two_images_and_salt", "model": "mm-model", "lora_name": "", "block_size": 4,
     "token_ids": IMG + [1, 2, 3, 4], "cache_salt": "tenant-a",
     "mm_inputs": [{"identifier": "img-a", "offset": 1, "length": 2},
                   {"identifier": "img-b", "offset": 3, "length": 6}]},
    {"name": "query_salt_only", "model": "m", "lora_name": "l", "block_size": 2, "token_ids": [1, 2, 3, 4, 5],
     "cache_salt": "s"},
]

NOTE = ("Index hashes of blocks with extra keys (README \"Index hash\"), computed with python3-xxhash by "
        "scripts/lib/extra_keys_hash_vectors.py. A case has the extra keys an engine sent per block "
        "(extra_keys: null or a list per block; a str starting with 0x is bytes in hex) or what a gateway "
        "sends in Match (cache_salt, mm_inputs); hashes are the index hashes of its full blocks.")
out = {"_note": NOTE, "cases": []}
for c in CASES:
    case = {k: to_json(v) for k, v in c.items()}
    case["hashes"] = hashes(c)
    out["cases"].append(case)
json.dump(out, sys.stdout, indent=1)
sys.stdout.write("\n")
