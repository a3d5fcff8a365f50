#!/usr/bin/env python3
"""Runs schemathesis against a live subsidy-service (started here on a fresh
store) until at least N requests have been generated, in passes:

  platform  local-platform-key   every operation          (about 70%)
  admin     local-admin-key      directories, reports, evaluations, simulations
  auditor   local-auditor-key    reports, directories, claims reads, usage

Checks: every schemathesis check, as the generated schemathesis.toml sets
them (--checks overrides it), with two settings there, each for a documented
behaviour:
  - positive_data_acceptance is replaced by schema_valid_requests_accepted
    (value_rules.py): a request the document allows may be refused only for
    a value rule no JSON Schema can state (a check digit, the birth date in
    an ID number, a department outside the plan), never for its shape;
  - negative_data_rejection is off for POST /v1/claims/batch, whose bad items
    are answered in their place with a problem (API.md §1), not by a 4xx for
    the whole batch.
Reports (NDJSON + JUnit per pass, and fuzz-summary.json / fuzz-failures.md)
go to scripts/reliability.d/results/fuzz/.

Usage: fuzz.py --binary PATH --schemathesis PATH [-n N] [--seed S]
Exit status: 0 no failure, 1 failures found, 2 the harness could not run.
"""

import argparse
import base64
import json
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
CHECKS = "all"

# name, key, schemathesis filter arguments, share of the budget
# (schemathesis ORs include filters of different kinds, so each pass uses one
# path regex and, where needed, excludes methods)
PASSES = [
    ("platform", "local-platform-key", [], 0.70),
    ("admin", "local-admin-key",
     ["--include-path-regex", r"^/v1/(directories|reports|evaluations|simulations)"], 0.15),
    ("auditor-reads", "local-auditor-key",
     ["--include-path-regex", r"^/v1/(reports|directories|claims)",
      "--exclude-method", "POST", "--exclude-method", "PUT"], 0.10),
    ("auditor-usage", "local-auditor-key", ["--include-path-regex", r"^/v1/usage/query$"], 0.05),
]

ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def id_number(prefix, birth, seq):
    body = f"{prefix}{birth}{seq:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, ID_WEIGHTS)) % 11]


def credit_code(body17):
    s = sum(USCC_CHARS.index(c) * w for c, w in zip(body17, USCC_WEIGHTS))
    return body17 + USCC_CHARS[(31 - s % 31) % 31]


def seed_claims(port, rng):
    """Records a few valid claims so that reads, events and revocations of
    generated requests can reach existing claims; returns their ids."""
    ids = []
    for i in range(8):
        claim_id = f"FZ-SEED-{i + 1}"
        person = id_number("330723" if i % 2 == 0 else "330522", f"19{70 + i}0{1 + i % 9}1{i}", 100 + i)
        claim = {
            "claim_id": claim_id, "county": "wuyi", "kind": "qualification_training",
            "event_date": f"2020-0{3 + i % 6}-15",
            "applicant": {"id_number": person, "name": f"种子{i}", "local_hukou": True, "residence_permit": False,
                          "employed_in_county": True, "unemployment_registered": False,
                          "receives_monthly_pension": i == 7, "public_institution_staff": False,
                          "groups": ["enterprise_employee"]},
            "details": {"occupation_code": f"6-31-01-0{i + 1}", "level": ["junior", "intermediate", "senior"][i % 3],
                        "certificate_number": f"FZSEED{i:04d}", "payee": "person"},
        }
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/claims", data=json.dumps(claim).encode(),
                                     method="POST", headers={"Authorization": "Bearer local-platform-key",
                                                             "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            if r.status in (200, 201):
                ids.append(claim_id)
    return ids


def write_config(path, claim_ids, rng):
    """schemathesis.toml: dictionaries of valid values the generator mixes in,
    so that generated requests get past validation often enough to reach the
    adjudication, the ledger and the success schemas."""
    people = [id_number(p, f"{y}{m:02d}{d:02d}", rng.randrange(1000))
              for p in ("330723", "330522", "110101")
              for y, m, d in ((1965, 3, 9), (1978, 11, 30), (1990, 5, 6), (2000, 2, 29), (1984, 7, 1))]
    credit = [credit_code("91330723MA0DEMQ01"), credit_code("91330723MA0000015"), credit_code("91330522MA2B3C4D5"),
              credit_code("12330723001234567")]
    occupations = ["6-31-01-03", "4-07-03-02", "6-18-01-01", "2-02-07-04", "1-01-01-01"]
    dicts = {
        "counties": ["wuyi", "changxing"],
        "years": [2020, 2021],
        "ids": people,
        "credit": credit,
        "occupations": occupations,
        "claim_ids": claim_ids or ["FZ-NONE"],
    }
    bindings = {
        "path.county": ("counties", 0.8),
        "path.year": ("years", 0.7),
        "path.claim_id": ("claim_ids", 0.6),
        "body.applicant.id_number": ("ids", 0.7),
        "body.claims[*].applicant.id_number": ("ids", 0.7),
        "body.id_number": ("ids", 0.7),
        "body.year": ("years", 0.7),
        "body.applicant.employer.credit_code": ("credit", 0.6),
        "body.institution.credit_code": ("credit", 0.6),
        "body.organization.credit_code": ("credit", 0.6),
        "body.claims[*].institution.credit_code": ("credit", 0.6),
        "body.claims[*].organization.credit_code": ("credit", 0.6),
        "body.enterprises[*].credit_code": ("credit", 0.7),
        "body.details.occupation_code": ("occupations", 0.6),
        "body.claims[*].details.occupation_code": ("occupations", 0.6),
    }
    with open(path, "w") as f:
        f.write("# generated by scripts/reliability.d/fuzz.py\n")
        # the check that replaces positive_data_acceptance (reads $SUBSIDY_OPENAPI)
        f.write(f"hooks = {json.dumps(os.path.join(HERE, 'value_rules.py'))}\n\n")
        for name, values in dicts.items():
            f.write(f"[dictionaries.{name}]\nvalues = {json.dumps(values)}\n\n")
        f.write("[parameters]\n")
        for k, (d, prob) in bindings.items():
            f.write(f'"{k}" = {{ dictionary = "{d}", probability = {prob} }}\n')
        f.write("\n# replaced by schema_valid_requests_accepted (value_rules.py)\n")
        f.write("[checks.positive_data_acceptance]\nenabled = false\n\n")
        f.write("# a batch answers each bad item in its place (API.md §1)\n")
        f.write('[[operations]]\ninclude-path = "/v1/claims/batch"\n'
                "checks.negative_data_rejection.enabled = false\n")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def start_server(binary, store, port, log_path):
    env = dict(os.environ)
    env.update({
        "SUBSIDY__STORE__PATH": store,
        "SUBSIDY__SERVER__PORT": str(port),
        "SUBSIDY__TELEMETRY__LEVEL": "warn",
    })
    env.pop("RUST_LOG", None)
    env.pop("SUBSIDY_ENV", None)
    log = open(log_path, "wb")
    proc = subprocess.Popen([binary], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}; see {log_path}")
        try:
            if get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
                return proc
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the server was not ready in 90s; see {log_path}")


def count_operations(schema, filters):
    """How many operations a pass selects (approximately, for the budget)."""
    import re
    paths = schema.get("paths", {})
    regex = None
    methods = None
    it = iter(filters)
    for a in it:
        if a == "--include-path-regex":
            regex = re.compile(next(it))
        elif a == "--include-method":
            methods = {next(it).lower()}
    n = 0
    for p, ops in paths.items():
        for m in ops:
            if m.lower() not in ("get", "put", "post", "delete", "patch"):
                continue
            if regex and not regex.search(p):
                continue
            if methods and m.lower() not in methods:
                continue
            n += 1
    return max(n, 1)


def b64(x):
    if isinstance(x, dict) and "$base64" in x:
        return base64.b64decode(x["$base64"]).decode("utf-8", errors="replace")
    if isinstance(x, dict) and "string" in x:
        return x["string"]
    return x if isinstance(x, str) else ("" if x is None else json.dumps(x, ensure_ascii=False))


def parse_ndjson(path):
    """Requests made, responses by status, check outcomes and failure examples."""
    out = {"requests": 0, "cases": 0, "statuses": {}, "checks": {}, "failures": []}
    if not path or not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            sf = e.get("ScenarioFinished")
            if not sf:
                continue
            rec = sf.get("recorder", {})
            label = rec.get("label", "?")
            out["cases"] += len(rec.get("cases", {}))
            inters = rec.get("interactions", {})
            out["requests"] += len(inters)
            for i in inters.values():
                resp = i.get("response") or {}
                st = str(resp.get("status_code", "no response"))
                out["statuses"][st] = out["statuses"].get(st, 0) + 1
            for case_id, checks in rec.get("checks", {}).items():
                for c in checks:
                    k = f"{c['name']}:{c['status']}"
                    out["checks"][k] = out["checks"].get(k, 0) + 1
                    if c["status"] != "failure":
                        continue
                    inter = inters.get(case_id) or {}
                    req = inter.get("request") or {}
                    resp = inter.get("response") or {}
                    info = c.get("failure_info") or {}
                    failure = info.get("failure") or {}
                    out["failures"].append({
                        "operation": label,
                        "check": c["name"],
                        "title": failure.get("title"),
                        "message": failure.get("message"),
                        "code": info.get("code"),
                        "request": {
                            "method": req.get("method"),
                            "uri": req.get("uri"),
                            "headers": {k: v for k, v in (req.get("headers") or {}).items()
                                        if k.lower() != "authorization"},
                            "body": b64(req.get("body"))[:4000],
                        },
                        "response": {
                            "status": resp.get("status_code"),
                            "headers": resp.get("headers"),
                            "body": b64(resp.get("content"))[:4000],
                        },
                    })
    return out


def run_pass(st, url, name, key, filters, max_examples, checks, seed, report_dir, phases=None, workers="2",
             config=None):
    os.makedirs(report_dir, exist_ok=True)
    ndjson = os.path.join(report_dir, "events.ndjson")
    junit = os.path.join(report_dir, "junit.xml")
    cmd = [st] + (["--config-file", config] if config else []) + ["run", url,
           "--header", f"Authorization: Bearer {key}",
           "--max-examples", str(max_examples),
           "--seed", str(seed),
           "--workers", workers,
           "--request-timeout", "20",
           "--suppress-health-check", "all",
           "--generation-database", "none",
           "--report", "junit,ndjson",
           "--report-ndjson-path", ndjson,
           "--report-junit-path", junit,
           "--continue-on-failure",
           "--no-color",
           *filters]
    if checks != "all":
        # the default: every check, as the generated schemathesis.toml sets them
        cmd += ["--checks", checks]
    if phases:
        cmd += ["--phases", phases]
    log_path = os.path.join(report_dir, "schemathesis.log")
    print(f"fuzz: pass {name}: --max-examples {max_examples} {' '.join(filters)} "
          f"{'--phases ' + phases if phases else ''}", flush=True)
    t0 = time.monotonic()
    with open(log_path, "w") as log:
        r = subprocess.run(cmd, cwd=report_dir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                           env={**os.environ, "NO_COLOR": "1"})
    res = parse_ndjson(ndjson)
    res.update({"pass": name, "key": key, "exit": r.returncode, "seconds": round(time.monotonic() - t0, 1),
                "max_examples": max_examples, "phases": phases or "all", "log": log_path})
    print(f"fuzz:   {res['requests']} requests, statuses {dict(sorted(res['statuses'].items()))}, "
          f"failed checks {sum(v for k, v in res['checks'].items() if k.endswith(':failure'))}, "
          f"schemathesis exit {r.returncode} ({res['seconds']}s)", flush=True)
    return res


def summarise_failures(all_failures):
    """Unique failures: by operation, check and title; up to 3 examples each."""
    uniq = {}
    for f in all_failures:
        k = (f["operation"], f["check"], f["title"])
        if k not in uniq:
            uniq[k] = dict(f, occurrences=0, examples=[])
        u = uniq[k]
        u["occurrences"] += 1
        if len(u["examples"]) < 3 and all(e["message"] != f["message"] for e in u["examples"]):
            u["examples"].append({x: f[x] for x in ("message", "request", "response")})
    return list(uniq.values())


def write_failures_md(path, failures):
    with open(path, "w") as f:
        f.write("# schemathesis failures (generated by scripts/fuzz)\n\n")
        if not failures:
            f.write("None.\n")
            return
        for i, x in enumerate(failures, 1):
            f.write(f"## {i}. {x['operation']}: {x['check']} ({x['occurrences']}x): {x['title']}\n\n")
            for j, ex in enumerate(x["examples"], 1):
                f.write(f"### example {j}\n\n- message: {ex['message']}\n\n")
                req, resp = ex["request"], ex["response"]
                f.write(f"Request: `{req['method']} {req['uri']}`\n\n")
                if req.get("headers"):
                    f.write(f"Headers: `{json.dumps(req['headers'], ensure_ascii=False)}`\n\n")
                if req.get("body"):
                    f.write("```\n" + req["body"] + "\n```\n\n")
                f.write(f"Response: {resp['status']} `{json.dumps(resp.get('headers'), ensure_ascii=False)}`\n\n")
                f.write("```\n" + (resp.get("body") or "") + "\n```\n\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("-n", "--requests", type=int, default=5000)
    p.add_argument("--binary", required=True)
    p.add_argument("--schemathesis", required=True)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--checks", default=CHECKS)
    p.add_argument("--workers", default="2")
    p.add_argument("--results", default=os.path.join(HERE, "results", "fuzz"))
    args = p.parse_args()
    args.schemathesis = os.path.abspath(args.schemathesis)
    args.binary = os.path.abspath(args.binary)
    args.results = os.path.abspath(args.results)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)

    shutil.rmtree(args.results, ignore_errors=True)
    os.makedirs(args.results)
    tmp = tempfile.mkdtemp(prefix="subsidy-fuzz-")
    binary = os.path.join(tmp, "subsidy-service")
    shutil.copy2(args.binary, binary)
    port = free_port()
    server_log = os.path.join(args.results, "server.log")
    try:
        proc = start_server(binary, os.path.join(tmp, "store"), port, server_log)
    except RuntimeError as e:
        print(f"fuzz: {e}", file=sys.stderr)
        return 2
    url = f"http://127.0.0.1:{port}/openapi.json"
    schema = json.loads(get(url)[1])
    with open(os.path.join(args.results, "openapi.json"), "w") as f:
        json.dump(schema, f, ensure_ascii=False, indent=1)
    os.environ["SUBSIDY_OPENAPI"] = os.path.join(args.results, "openapi.json")
    print(f"fuzz: server on port {port}, seed {seed}, target >= {args.requests} requests", flush=True)
    config = os.path.join(args.results, "schemathesis.toml")
    write_config(config, seed_claims(port, rng), rng)

    results = []
    total = 0
    t0 = time.monotonic()
    try:
        # Observed: one full pass generates about 2 × max-examples requests per
        # operation in the fuzzing phase, plus a fixed coverage-phase set.
        # The coverage phase sends a fixed ~3000+ requests over all passes:
        # small budgets (CI) skip it and rely on examples, fuzzing and stateful.
        phases = None if args.requests >= 4000 else "examples,fuzzing,stateful"
        for name, key, filters, share in PASSES:
            ops = count_operations(schema, filters)
            m = max(3, math.ceil(args.requests * share / ops / (3 if phases is None else 1.5)))
            res = run_pass(args.schemathesis, url, name, key, filters, m, args.checks, rng.randrange(2**31),
                           os.path.join(args.results, name), phases=phases, workers=args.workers, config=config)
            results.append(res)
            total += res["requests"]
            if proc.poll() is not None:
                raise RuntimeError(f"the server died during pass {name}; see {server_log}")
        # Top up with more platform fuzzing (of the operations the platform may
        # call) until the budget is reached; the yield per --max-examples is
        # measured on each top-up and the next one sized from it.
        topup_filters = ["--exclude-path-regex", r"^/v1/(directories|reports)"]
        per_example = count_operations(schema, topup_filters)
        for i in range(1, 21):
            if total >= args.requests:
                break
            m = max(5, math.ceil((args.requests - total) * 1.1 / per_example))
            res = run_pass(args.schemathesis, url, f"platform-topup-{i}", "local-platform-key", topup_filters, m,
                           args.checks, rng.randrange(2**31), os.path.join(args.results, f"platform-topup-{i}"),
                           phases="fuzzing", workers=args.workers, config=config)
            results.append(res)
            total += res["requests"]
            if res["requests"]:
                per_example = max(1.0, res["requests"] / m)
            if proc.poll() is not None:
                raise RuntimeError(f"the server died during a top-up pass; see {server_log}")
    except RuntimeError as e:
        print(f"fuzz: {e}", file=sys.stderr)
        return 2
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(40)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    failures = summarise_failures([f for r in results for f in r["failures"]])
    statuses, checks = {}, {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
        for k, v in r["checks"].items():
            checks[k] = checks.get(k, 0) + v
    failed_checks = sum(v for k, v in checks.items() if k.endswith(":failure"))
    server_errors = sum(v for k, v in statuses.items() if k.startswith("5"))
    st_errors = [r["pass"] for r in results if r["exit"] not in (0, 1)]
    summary = {
        "tree": os.environ.get("RELIABILITY_TREE", "unknown"),
        "seed": seed,
        "target_requests": args.requests,
        "requests": total,
        "seconds": round(time.monotonic() - t0, 1),
        "passes": [{k: r[k] for k in ("pass", "key", "max_examples", "phases", "requests", "statuses", "checks",
                                       "exit", "seconds")} for r in results],
        "statuses": dict(sorted(statuses.items())),
        "checks": dict(sorted(checks.items())),
        "failed_checks": failed_checks,
        "unique_failures": len(failures),
        "responses_5xx": server_errors,
        "schemathesis_errors": st_errors,
    }
    with open(os.path.join(args.results, "fuzz-summary.json"), "w") as f:
        json.dump({"summary": summary, "failures": failures}, f, ensure_ascii=False, indent=1)
    write_failures_md(os.path.join(args.results, "fuzz-failures.md"), failures)

    print("\n== fuzz summary ==")
    print(f"  requests: {total} (target {args.requests}) in {summary['seconds']}s, seed {seed}")
    for r in results:
        print(f"    {r['pass']:18s} {r['key']:20s} {r['requests']:6d} requests  exit {r['exit']}")
    print(f"  responses by status: {summary['statuses']}")
    print(f"  checks: {summary['checks']}")
    print(f"  5xx responses: {server_errors}")
    print(f"  failed checks: {failed_checks}; unique failures: {len(failures)}")
    for x in failures:
        print(f"    - {x['operation']}: {x['check']} ({x['occurrences']}x): {x['title']}")
    if st_errors:
        print(f"  schemathesis reported errors (not check failures) in: {st_errors}; see their schemathesis.log")
    print(f"  reports: {args.results}")
    if total < args.requests:
        print(f"fuzz: only {total} of {args.requests} requests were generated", file=sys.stderr)
        return 2
    return 1 if (failures or failed_checks or server_errors or st_errors) else 0


if __name__ == "__main__":
    sys.exit(main())
