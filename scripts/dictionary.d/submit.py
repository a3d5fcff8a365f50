#!/usr/bin/env python3
"""Records every `submit` and `batch` claim of case files (scripts/record-dictionary)."""
import http.client
import json
import sys

port, files = int(sys.argv[1]), sys.argv[2:]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer local-platform-key", "Content-Type": "application/json"}
sent = 0
for path in files:
    for case in json.load(open(path, encoding="utf-8"))["cases"]:
        for step in case.get("steps", []):
            claims = [step["submit"]] if "submit" in step else step.get("batch", {}).get("claims", [])
            for claim in claims:
                conn.request("POST", "/v1/claims", json.dumps(claim), headers)
                conn.getresponse().read()
                sent += 1
print(f"submitted {sent} claims", file=sys.stderr)
