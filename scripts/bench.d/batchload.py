#!/usr/bin/env python3
"""POST /v1/claims/batch driver (stdlib only), used by scripts/bench for
scenario 5 and for the preload. Every claim is for a new person (person
numbers BASE.., the numbering of common.lua); every batch must answer 200
with a decision for every item.

    batchload.py PORT BASE --count N  [--per 1000] [--conc 4] [--mix]   # preload
    batchload.py PORT BASE --seconds S [--per 1000] [--conc 64] [--block B]

--count: exactly N claims, then stop. --seconds: keep CONC batches in flight
for S seconds, then wait for every batch sent (none is abandoned, so the
rate counts all the work the server did: claims answered / time until the
last answer). --mix alternates Wuyi qualification_training and Changxing
skill_upgrade with four levels (the preload); otherwise every claim is the
Wuyi qualification_training of scenario 3.

Prints `BENCH {...}` (same fields as common.lua's done(), latencies per
batch) or, with --count, `PRELOAD {...}`; exits 1 if a batch or item failed.
"""
import argparse
import http.client
import json
import sys
import threading
import time
from datetime import date, timedelta

W = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK = "10X98765432"
DAY0 = date(1962, 1, 1)
_dates = {}


def id_number(prefix, i):
    day, seq = divmod(i, 1000)
    b = _dates.get(day)
    if b is None:
        b = _dates[day] = (DAY0 + timedelta(days=day)).strftime("%Y%m%d")
    s17 = f"{prefix}{b}{seq:03d}"
    return s17 + CHECK[sum(int(c) * w for c, w in zip(s17, W)) % 11]


APPLICANT = ('"name":"测试","local_hukou":true,"residence_permit":false,"employed_in_county":true,'
             '"unemployment_registered":false,"receives_monthly_pension":false,'
             '"public_institution_staff":false,"groups":["enterprise_employee"]')
LEVELS = ["junior", "intermediate", "senior", "technician"]


def qualification(i, prefix="BQ", level="intermediate"):
    return ('{"claim_id":"%s-%d","county":"wuyi","kind":"qualification_training","event_date":"2020-06-15",'
            '"applicant":{"id_number":"%s",%s},"details":{"occupation_code":"6-31-01-03","level":"%s",'
            '"certificate_number":"%sZ%d","payee":"person"}}'
            % (prefix, i, id_number("330723", i), APPLICANT, level, prefix, i))


def mixed(i):
    level = LEVELS[(i // 2) % 4]
    if i % 2 == 0:
        return qualification(i, "PL", level)
    return ('{"claim_id":"PL-%d","county":"changxing","kind":"skill_upgrade","event_date":"2021-04-10",'
            '"applicant":{"id_number":"%s",%s},"details":{"occupation_code":"4-07-05-01","level":"%s",'
            '"certificate_number":"PLZ%d"}}' % (i, id_number("330522", i), APPLICANT, level, i))


def pct(xs, p):
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))] if xs else 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("base", type=int)
    ap.add_argument("--count", type=int)
    ap.add_argument("--seconds", type=float)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--conc", type=int, default=4)
    ap.add_argument("--block", type=int, default=1_000_000)
    ap.add_argument("--mix", action="store_true")
    ap.add_argument("--progress", action="store_true")
    a = ap.parse_args()
    make = mixed if a.mix else qualification
    limit = (a.count + a.per - 1) // a.per if a.count is not None else a.block // a.per
    lock = threading.Lock()
    st = {"next": 0, "ok": 0, "claims": 0, "non2xx": 0, "item_errors": 0, "socket_errors": 0, "bytes": 0,
          "lat": [], "last": 0.0}
    t0 = time.monotonic()
    deadline = t0 + a.seconds if a.seconds is not None else None

    def worker():
        hdrs = {"Authorization": "Bearer local-platform-key", "Content-Type": "application/json"}
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
        while True:
            with lock:
                b = st["next"]
                if b >= limit or (deadline is not None and time.monotonic() >= deadline):
                    break
                st["next"] += 1
            first = a.base + b * a.per
            last = first + a.per if a.count is None else min(a.base + a.count, first + a.per)
            body = ('{"claims":[' + ",".join(make(i) for i in range(first, last)) + "]}").encode()
            s = time.monotonic()
            try:
                conn.request("POST", "/v1/claims/batch", body, hdrs)
                r = conn.getresponse()
                data = r.read()
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    st["socket_errors"] += 1
                print(f"batch {b}: {e}", file=sys.stderr)
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=600)
                continue
            now = time.monotonic()
            with lock:
                st["lat"].append(now - s)
                st["last"] = now
                st["bytes"] += len(data)
                if r.status != 200:
                    st["non2xx"] += 1
                    print(f"batch {b}: HTTP {r.status} {data[:300]!r}", file=sys.stderr)
                else:
                    st["ok"] += 1
                    st["claims"] += last - first
                    st["item_errors"] += data.count(b'"error":')
                done = len(st["lat"])
                if a.progress and done % 100 == 0:
                    el = now - t0
                    print(f"  {done * a.per:>9} claims, {el:6.1f} s, {done * a.per / el:7.0f} claims/s, "
                          f"last batch {(now - s) * 1000:.0f} ms", file=sys.stderr, flush=True)
        conn.close()

    threads = [threading.Thread(target=worker) for _ in range(a.conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    el = (st["last"] or time.monotonic()) - t0
    lat = sorted(st["lat"])
    us = lambda x: int(x * 1e6)
    out = {"requests": len(lat), "duration_us": us(el), "bytes": st["bytes"], "p50_us": us(pct(lat, 50)),
           "p90_us": us(pct(lat, 90)), "p99_us": us(pct(lat, 99)), "max_us": us(lat[-1] if lat else 0),
           "mean_us": round(us(sum(lat) / len(lat)) if lat else 0, 1), "non2xx": st["non2xx"],
           "unexpected": st["non2xx"], "item_errors": st["item_errors"], "socket_errors": st["socket_errors"],
           "timeouts": 0, "built": st["next"], "responses": len(lat), "claims": st["claims"]}
    if a.count is not None:
        pre = {"claims": st["claims"], "seconds": round(el, 1), "claims_per_s": round(st["claims"] / el) if el else 0,
               "failed_batches": st["non2xx"] + st["socket_errors"], "item_errors": st["item_errors"],
               "batch_p50_ms": round(pct(lat, 50) * 1000, 1), "batch_max_ms": round((lat[-1] if lat else 0) * 1000, 1),
               "per": a.per, "conc": a.conc}
        print("PRELOAD " + json.dumps(pre), flush=True)
    else:
        print("BENCH " + json.dumps(out), flush=True)
    sys.exit(1 if st["non2xx"] or st["socket_errors"] or st["item_errors"] else 0)


if __name__ == "__main__":
    main()
