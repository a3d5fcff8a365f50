#!/usr/bin/env python3
"""HTTP client of scripts/container-check (standard library only).

  golden.py wait   BASE [SECONDS]              until GET /readyz answers 200
  golden.py run    BASE CASES RECORD           run the golden cases (the format
                                               tests/api/golden.rs reads), then
                                               GET every recorded claim; RECORD
                                               gets what each answer was
  golden.py verify BASE RECORD                 GET every claim of RECORD again

Keys come from the environment: CHECK_PLATFORM_KEY, CHECK_ADMIN_KEY.
Exit status 0 only when every step is as expected.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request


def call(base, method, path, key=None, body=None, raw=None):
    data = raw.encode() if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        req.add_header("content-type", "application/json")
    if key:
        req.add_header("authorization", "Bearer " + key)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, headers, text = r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        status, headers, text = e.code, e.headers, e.read().decode()
    try:
        payload = json.loads(text)
    except ValueError:
        payload = text
    return status, headers, payload


def keys():
    return os.environ["CHECK_PLATFORM_KEY"], os.environ["CHECK_ADMIN_KEY"]


def wait(base, seconds=60.0):
    deadline = time.monotonic() + float(seconds)
    last = None
    while time.monotonic() < deadline:
        try:
            status, _, _ = call(base, "GET", "/readyz")
            if status == 200:
                return 0
            last = f"HTTP {status}"
        except OSError as e:
            last = str(e)
        time.sleep(0.2)
    print(f"not ready after {seconds}s: {last}", file=sys.stderr)
    return 1


def check_step(name, i, step, status, headers, body):
    """The same comparisons as tests/api/golden.rs::run_file."""
    expect = step.get("expect") or {}
    problems = []
    b = body if isinstance(body, dict) else {}
    if "http" in expect and status != expect["http"]:
        problems.append(f"http {status} (want {expect['http']})")
    for k in ("status", "amount", "counted", "payee", "recorded"):
        if k in expect and b.get(k, "<absent>") != expect[k]:
            problems.append(f"{k} {b.get(k, '<absent>')!r} (want {expect[k]!r})")
    codes = [r.get("code", "") for r in b.get("reasons") or [] if isinstance(r, dict)]
    for r in expect.get("reasons") or []:
        if r not in codes:
            problems.append(f"missing reason {r} (have {codes})")
    if "reasons_exact" in expect and sorted(expect["reasons_exact"]) != sorted(codes):
        problems.append(f"reasons {codes} (want exactly {expect['reasons_exact']})")
    for r in expect.get("reasons_absent") or []:
        if r in codes:
            problems.append(f"unexpected reason {r}")
    if expect.get("usage_absent") is True and b.get("usage") is not None:
        problems.append(f"usage {b['usage']} (want none)")
    if "usage_used" in expect and (b.get("usage") or {}).get("used") != expect["usage_used"]:
        problems.append(f"usage {b.get('usage')} (want used {expect['usage_used']})")
    if expect.get("replayed") is True and headers.get("idempotent-replayed") != "true":
        problems.append("not marked Idempotent-Replayed")
    if "error" in expect and b.get("code") != expect["error"]:
        problems.append(f"error {b.get('code')!r} (want {expect['error']!r})")
    fields = [e.get("field") for e in b.get("errors") or [] if isinstance(e, dict)]
    wanted = ([expect["field"]] if "field" in expect else []) + list(expect.get("fields") or [])
    for f in wanted:
        if f not in fields:
            problems.append(f"field {f} not in {fields}")
    return [f"{name} (step {i}): {'; '.join(problems)}"] if problems else []


def run(base, cases_path, record_path):
    platform, admin = keys()
    with open(cases_path, encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    failures, steps = [], 0
    answered = {}  # claim id -> the last decision the service answered for it
    evaluated = set()  # ids only ever evaluated: must not be stored
    for case in cases:
        name = case.get("name", "?")
        for i, step in enumerate(case.get("steps") or []):
            steps += 1
            if "directory" in step:
                d = step["directory"]
                r = call(base, "PUT", f"/v1/directories/{d['county']}/trade-friction-enterprises", admin,
                         {"enterprises": d["enterprises"]})
            elif "submit" in step:
                r = call(base, "POST", "/v1/claims", platform, step["submit"])
            elif "evaluate" in step:
                r = call(base, "POST", "/v1/evaluations", platform, step["evaluate"])
                evaluated.add(step["evaluate"].get("claim_id"))
            elif "revoke" in step:
                r = call(base, "POST", f"/v1/claims/{step['revoke']}/revocation", platform,
                         {"reason": "scenario revocation"})
            elif "raw" in step:
                r = call(base, "POST", "/v1/claims", platform, raw=step["raw"])
            else:
                failures.append(f"{name} (step {i}): unknown step {step}")
                continue
            status, headers, body = r
            failures += check_step(name, i, step, status, headers, body)
            if ("submit" in step or "revoke" in step) and status in (200, 201) and isinstance(body, dict):
                answered[body["claim_id"]] = body
    evaluated -= set(answered)
    # What the service answered is what it has stored.
    for cid, want in answered.items():
        status, _, got = call(base, "GET", f"/v1/claims/{cid}", platform)
        if status != 200 or got != want:
            failures.append(f"GET /v1/claims/{cid}: {status} {got} (answered {want})")
    for cid in evaluated:
        status, _, _ = call(base, "GET", f"/v1/claims/{cid}", platform)
        if status != 404:
            failures.append(f"GET /v1/claims/{cid}: {status} (only evaluated, want 404)")
    with open(record_path, "w", encoding="utf-8") as f:
        json.dump({"answered": answered, "evaluated": sorted(evaluated)}, f, ensure_ascii=False)
    for line in failures:
        print("FAIL " + line)
    print(f"golden: {len(cases)} cases, {steps} steps, {len(failures)} failure(s); "
          f"{len(answered)} decisions read back equal to the answers")
    return 1 if failures or steps == 0 else 0


def verify(base, record_path):
    platform, _ = keys()
    with open(record_path, encoding="utf-8") as f:
        record = json.load(f)
    failures, same = [], 0
    for cid, want in record["answered"].items():
        status, _, got = call(base, "GET", f"/v1/claims/{cid}", platform)
        if status == 200 and got == want:
            same += 1
        else:
            failures.append(f"GET /v1/claims/{cid}: {status} {got} (answered {want})")
    for cid in record["evaluated"]:
        status, _, _ = call(base, "GET", f"/v1/claims/{cid}", platform)
        if status != 404:
            failures.append(f"GET /v1/claims/{cid}: {status} (only evaluated, want 404)")
    for line in failures:
        print("FAIL " + line)
    print(f"persisted: {same}/{len(record['answered'])} decisions read back equal to the answers "
          f"after the restart")
    return 1 if failures or not record["answered"] else 0


def main(argv):
    if len(argv) >= 2 and argv[0] == "wait":
        return wait(*argv[1:3])
    if len(argv) == 4 and argv[0] == "run":
        return run(*argv[1:])
    if len(argv) == 3 and argv[0] == "verify":
        return verify(*argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
