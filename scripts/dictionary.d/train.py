#!/usr/bin/env python3
"""Trains the record dictionary from an export (scripts/record-dictionary)."""
import json
import random
import sys

import zstandard

export, out = sys.argv[1], sys.argv[2]
records = []
for line in open(export, encoding="utf-8"):
    o = json.loads(line)
    if o.pop("type", None) == "claim":
        # As the service stores them: compact JSON, UTF-8.
        records.append(json.dumps(o, ensure_ascii=False, separators=(",", ":")).encode())
random.Random(7).shuffle(records)
train, test = records[: len(records) * 4 // 5], records[len(records) * 4 // 5 :]
# The dictionary does not depend on the level: it was trained and measured
# at level 1; the service writes records at level -1 since 2026-11-30
# (literals left without Huffman coding: larger records, cheaper to read).
d = zstandard.train_dictionary(16384, train, level=1)
plain = zstandard.ZstdCompressor(level=1)
with_dict = zstandard.ZstdCompressor(level=1, dict_data=d)
n = len(test)
print(
    f"{len(records)} records, {sum(map(len, test)) / n:.0f} B as JSON; "
    f"zstd level 1 {sum(len(plain.compress(r)) for r in test) / n:.0f} B, "
    f"with the dictionary {sum(len(with_dict.compress(r)) for r in test) / n:.0f} B",
    file=sys.stderr,
)
open(out, "wb").write(d.as_bytes())
print(f"wrote {out} ({len(d.as_bytes())} bytes)", file=sys.stderr)
