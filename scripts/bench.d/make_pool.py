#!/usr/bin/env python3
"""Regenerates evaluations.jsonl, the pool of realistic claims that scenario 2
(POST /v1/evaluations) cycles through: every claim of the public golden cases
that the service accepts (201/200: approved and rejected decisions of 22
county/kind pairs) plus the OpenAPI examples of every kind.

    python3 scripts/bench.d/make_pool.py [public.json] [openapi.json]
"""
import json
import pathlib
import sys

here = pathlib.Path(__file__).resolve().parent
root = here.parent.parent
public = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else root.parent / "shared/spec/cases/public.json")
openapi = pathlib.Path(sys.argv[2] if len(sys.argv) > 2 else root / "openapi/openapi.json")

claims = []
for case in json.loads(public.read_text())["cases"]:
    for step in case["steps"]:
        if "submit" in step and step.get("expect", {}).get("http") in (200, 201):
            claims.append(step["submit"])
doc = json.loads(openapi.read_text())
examples = doc["paths"]["/v1/claims"]["post"]["requestBody"]["content"]["application/json"]["examples"]
for ex in examples.values():
    claims.append(ex["value"])

out = here / "evaluations.jsonl"
with out.open("w") as f:
    for c in claims:
        f.write(json.dumps(c, ensure_ascii=False, separators=(",", ":")) + "\n")
kinds = {(c["county"], c["kind"]) for c in claims}
print(f"{out}: {len(claims)} claims, {len(kinds)} county/kind pairs")
