#!/usr/bin/env python3
"""Crash-consistency driver for subsidy-service (stdlib only).

Each cycle:
  1. start the server on the store (fresh temp store for the first cycle),
  2. send concurrent load: single claims, batches, deliberate retries (same
     body: must replay), conflicting reuses of an id (must be 409), reads;
     many claims target a few "hot" people so the 3-per-year limit is hit,
  3. `kill -9` the server at a random moment while requests are in flight,
  4. run `subsidy-service check --store` on the crashed store (must exit 0),
  5. restart on the same store and verify over HTTP:
     (a) every acknowledged claim (201/200, and every decided item of a 200
         batch) is returned by GET /v1/claims/{id} with the identical decision,
     (b) no person has more than 3 counted grants per county and year: the
         usage counter, the usage index and the decisions we know agree,
  6. stop the server (SIGTERM) and run `check --store` again (must exit 0).

Usage: crash_test.py --binary PATH --cycles N [--seed S] [--results DIR]
Exit status 0 when no violation was found, 1 otherwise, 2 when the harness
itself could not run (server would not start, ...).
"""

import argparse
import datetime as dt
import http.client
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PLATFORM_KEY = "local-platform-key"
LIMIT = 3
YEARS = (2020, 2021)
LEVELS = [
    "senior_technician", "technician", "senior", "intermediate", "junior",
    "special_ability_advanced", "special_ability_junior",
]
WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
CHECK_CHARS = "10X98765432"


# --------------------------------------------------------------------------
# Test data


def id_number(birth: dt.date, seq: int, prefix: str = "330723") -> str:
    """A valid GB 11643-1999 resident ID number."""
    body = f"{prefix}{birth:%Y%m%d}{seq % 1000:03d}"
    s = sum(int(c) * w for c, w in zip(body, WEIGHTS))
    return body + CHECK_CHARS[s % 11]


class People:
    """Unique Wuyi residents."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.seen = set()

    def new(self) -> str:
        while True:
            birth = dt.date(1962, 1, 1) + dt.timedelta(days=self.rng.randrange(0, 38 * 365))
            n = id_number(birth, self.rng.randrange(0, 1000))
            if n not in self.seen:
                self.seen.add(n)
                return n


def event_date(rng: random.Random, year: int) -> str:
    start = dt.date(2020, 2, 1) if year == 2020 else dt.date(2021, 1, 1)
    end = dt.date(year, 12, 31)
    return str(start + dt.timedelta(days=rng.randrange(0, (end - start).days + 1)))


def occupation(rng: random.Random) -> str:
    return f"{rng.randint(1, 8)}-{rng.randint(1, 99):02d}-{rng.randint(1, 99):02d}-{rng.randint(1, 99):02d}"


# --------------------------------------------------------------------------
# HTTP


class Client:
    """One keep-alive connection (one per thread)."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port = port
        self.timeout = timeout
        self.conn = None

    def request(self, method, path, body=None, key=PLATFORM_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=headers)
            r = self.conn.getresponse()
            data = r.read()
            hdrs = {k.lower(): v for k, v in r.getheaders()}
            if hdrs.get("connection", "").lower() == "close":
                self.close()
            return r.status, hdrs, data
        except Exception:
            self.close()
            raise

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            except Exception:
                pass
            self.conn = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# The server


class Server:
    def __init__(self, binary, store, logdir):
        self.binary = binary
        self.store = store
        self.logdir = logdir
        self.proc = None
        self.port = None
        self.starts = 0

    def start(self, tag: str, timeout: float = 90.0):
        self.port = free_port()
        env = dict(os.environ)
        env.update({
            "SUBSIDY__STORE__PATH": self.store,
            "SUBSIDY__SERVER__PORT": str(self.port),
            "SUBSIDY__TELEMETRY__LEVEL": "warn",
        })
        env.pop("RUST_LOG", None)
        env.pop("SUBSIDY_ENV", None)
        self.starts += 1
        self.log_path = os.path.join(self.logdir, f"server-{self.starts:03d}-{tag}.log")
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([self.binary], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        c = Client(self.port, timeout=5)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode} at start; see {self.log_path}")
            try:
                status, _, _ = c.request("GET", "/readyz")
                if status == 200:
                    c.close()
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server not ready after {timeout}s; see {self.log_path}")

    def kill9(self):
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, timeout: float = 40.0) -> bool:
        """SIGTERM; True if it exited by itself in time (then SIGKILL)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
            return True
        except subprocess.TimeoutExpired:
            self.kill9()
            return False

    def check(self):
        r = subprocess.run([self.binary, "check", "--store", self.store], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
        return r.returncode, (r.stdout + r.stderr).strip()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None


# --------------------------------------------------------------------------
# The harness


class Harness:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.run_id = f"{self.rng.randrange(16**6):06x}"
        self.people = People(self.rng)
        self.lock = threading.Lock()
        self.seq = 0
        self.cert_seq = 0
        # claim_id -> {"body": bytes, "person": str, "year": int}
        self.sent = {}
        self.sent_ids = []
        # claim_id -> decision (dict), for every acknowledged claim
        self.acked = {}
        # claim_id -> decision found after a crash for a claim never acknowledged
        self.recovered = {}
        # ids whose outcome we do not know (no answer before the crash)
        self.unknown = set()
        self.not_recorded = 0
        # batches whose answer was lost: their ids (recorded all-or-nothing)
        self.lost_batches = []
        # ids of batches in flight: deliberate retries leave them alone so
        # that a lost batch can be checked for atomicity
        self.batch_in_flight = set()
        self.verified_now = 0
        self.violations = []
        self.stats = {
            "requests": 0, "single_201": 0, "single_200_replay": 0, "batches_200": 0, "batch_items_decided": 0,
            "batch_items_replayed": 0, "retries": 0, "conflicts_409": 0, "reads": 0, "no_answer": 0,
            "answers_approved_counted": 0, "answers_annual_limit_rejected": 0, "answers_other": 0, "verified_get": 0,
            "usage_checks": 0, "checks_run": 0, "in_flight_at_kill": 0, "graceful_stop_timeouts": 0,
            "recovered_unacked": 0, "lost_batches_checked": 0,
        }
        self.global_hot = [self.people.new() for _ in range(3)]

    # ----- bookkeeping

    def violation(self, kind, detail):
        with self.lock:
            self.violations.append({"kind": kind, "detail": detail})
        print(f"  VIOLATION [{kind}] {json.dumps(detail, ensure_ascii=False)[:600]}", flush=True)

    def bump(self, k, n=1):
        with self.lock:
            self.stats[k] += n

    def new_claim(self, cycle, hot, warm):
        with self.lock:
            self.seq += 1
            self.cert_seq += 1
            n, cert = self.seq, self.cert_seq
        r = random.random()
        if r < 0.25:
            person = random.choice(hot)
        elif r < 0.35:
            person = random.choice(self.global_hot)
        else:
            person = random.choice(warm)
        year = random.choice(YEARS)
        claim_id = f"CT-{self.run_id}-c{cycle:03d}-{n:07d}"
        claim = {
            "claim_id": claim_id,
            "county": "wuyi",
            "kind": "qualification_training",
            "event_date": event_date(random, year),
            "applicant": {
                "id_number": person,
                "name": f"测试{n}",
                "local_hukou": True,
                "residence_permit": False,
                "employed_in_county": True,
                "unemployment_registered": False,
                "receives_monthly_pension": False,
                "public_institution_staff": False,
                "groups": ["enterprise_employee"],
            },
            "details": {
                "occupation_code": occupation(random),
                "level": random.choice(LEVELS),
                "certificate_number": f"CT{self.run_id}{cert:09d}",
                "payee": "person",
            },
        }
        body = json.dumps(claim, ensure_ascii=False).encode()
        with self.lock:
            self.sent[claim_id] = {"body": body, "person": person, "year": year, "claim": claim}
            self.sent_ids.append(claim_id)
        return claim_id, claim, body

    def record_decision(self, claim_id, decision, how, expect_replay=None):
        """An acknowledged decision: it must equal any earlier acknowledgement."""
        if decision.get("claim_id") != claim_id:
            self.violation("wrong_claim_id", {"claim_id": claim_id, "decision": decision})
        with self.lock:
            prev = self.acked.get(claim_id)
            if prev is None:
                prev = self.recovered.pop(claim_id, None)
                self.acked[claim_id] = decision if prev is None else prev
            self.unknown.discard(claim_id)
        if prev is not None and prev != decision:
            self.violation("replay_differs", {"claim_id": claim_id, "how": how, "first": prev, "now": decision})
        if expect_replay and prev is None:
            pass  # the original's answer was lost: a replay of it is fine
        self.tally(decision)

    def tally(self, d):
        if d.get("status") == "approved" and d.get("counted"):
            self.bump("answers_approved_counted")
            u = d.get("usage") or {}
            if u.get("used", 0) > LIMIT:
                self.violation("usage_over_limit_in_decision", {"decision": d})
        elif any(r.get("code") == "ANNUAL_LIMIT_REACHED" for r in d.get("reasons", [])):
            self.bump("answers_annual_limit_rejected")
        else:
            self.bump("answers_other")

    # ----- load

    def worker(self, port, cycle, hot, warm, stop, inflight):
        c = Client(port, timeout=30)
        while not stop.is_set():
            r = random.random()
            try:
                if r < 0.50:
                    self.send_single(c, cycle, hot, warm, inflight)
                elif r < 0.70:
                    self.send_batch(c, cycle, hot, warm, inflight)
                elif r < 0.85:
                    self.send_retry(c, inflight)
                elif r < 0.90:
                    self.send_conflict(c, inflight)
                else:
                    self.send_read(c, inflight)
            except Exception as e:  # a bug of the harness must not hide
                self.violation("harness_error", {"error": repr(e)})
                stop.set()
        c.close()

    def call(self, c, inflight, method, path, body=None):
        """Returns (status, headers, data) or None when no answer came."""
        self.bump("requests")
        with self.lock:
            inflight[0] += 1
        try:
            return c.request(method, path, body)
        except (OSError, http.client.HTTPException):
            self.bump("no_answer")
            return None
        finally:
            with self.lock:
                inflight[0] -= 1

    def send_single(self, c, cycle, hot, warm, inflight):
        claim_id, _, body = self.new_claim(cycle, hot, warm)
        with self.lock:
            self.unknown.add(claim_id)
        res = self.call(c, inflight, "POST", "/v1/claims", body)
        if res is None:
            return
        status, hdrs, data = res
        if status == 201:
            self.bump("single_201")
            self.record_decision(claim_id, json.loads(data), "201")
        elif status == 200:
            # a concurrent deliberate retry of this id got there first
            self.bump("single_200_replay")
            self.record_decision(claim_id, json.loads(data), "200")
        else:
            self.violation("claim_refused", {"claim_id": claim_id, "status": status,
                                             "response": data.decode(errors="replace")[:500]})
            with self.lock:
                self.unknown.discard(claim_id)

    def send_batch(self, c, cycle, hot, warm, inflight):
        n = random.randint(100, 300) if random.random() < 0.05 else random.randint(2, 12)
        claims = []
        ids = []
        for _ in range(n):
            claim_id, claim, _ = self.new_claim(cycle, hot, warm)
            claims.append(claim)
            ids.append(claim_id)
        dup = random.random() < 0.2
        if dup:
            claims.append(claims[0])  # the same claim twice: the second replays
            ids.append(ids[0])
        with self.lock:
            self.unknown.update(ids)
            self.batch_in_flight.update(ids)
        body = json.dumps({"claims": claims}, ensure_ascii=False).encode()
        res = self.call(c, inflight, "POST", "/v1/claims/batch", body)
        with self.lock:
            self.batch_in_flight.difference_update(ids)
            if res is None:
                self.lost_batches.append(sorted(set(ids)))
        if res is None:
            return
        status, _, data = res
        if status != 200:
            self.violation("batch_refused", {"status": status, "response": data.decode(errors="replace")[:500]})
            return
        self.bump("batches_200")
        results = json.loads(data)["results"]
        if len(results) != len(ids):
            self.violation("batch_result_count", {"sent": len(ids), "got": len(results)})
        for i, (claim_id, item) in enumerate(zip(ids, results)):
            if item.get("claim_id") != claim_id:
                self.violation("batch_item_order", {"index": i, "expected": claim_id, "item": item})
            if "decision" in item:
                self.bump("batch_items_decided")
                if item.get("replayed"):
                    self.bump("batch_items_replayed")
                elif dup and i == len(ids) - 1:
                    self.violation("batch_duplicate_not_replayed", {"claim_id": claim_id, "item": item})
                self.record_decision(claim_id, item["decision"], "batch")
            else:
                self.violation("batch_item_error", {"claim_id": claim_id, "item": item})

    def send_retry(self, c, inflight):
        with self.lock:
            if not self.sent_ids:
                return
            claim_id = random.choice(self.sent_ids)
            if claim_id in self.batch_in_flight:
                return
            body = self.sent[claim_id]["body"]
            was_acked = claim_id in self.acked
        self.bump("retries")
        res = self.call(c, inflight, "POST", "/v1/claims", body)
        if res is None:
            return
        status, hdrs, data = res
        if status == 200:
            self.bump("single_200_replay")
            if hdrs.get("idempotent-replayed") != "true":
                self.violation("replay_without_header", {"claim_id": claim_id, "headers": hdrs})
            self.record_decision(claim_id, json.loads(data), "retry-200")
        elif status == 201:
            if was_acked:
                self.violation("acked_claim_decided_again", {"claim_id": claim_id,
                                                             "first": self.acked[claim_id],
                                                             "now": json.loads(data)})
            else:
                self.record_decision(claim_id, json.loads(data), "retry-201")
        else:
            self.violation("retry_refused", {"claim_id": claim_id, "status": status,
                                             "response": data.decode(errors="replace")[:500]})

    def send_conflict(self, c, inflight):
        with self.lock:
            if not self.acked:
                return
            claim_id = random.choice(list(self.acked.keys())[-500:])
            claim = json.loads(self.sent[claim_id]["body"])
        claim["details"]["certificate_number"] += "-other"
        res = self.call(c, inflight, "POST", "/v1/claims", json.dumps(claim, ensure_ascii=False).encode())
        if res is None:
            return
        status, _, data = res
        if status == 409 and b"CLAIM_ID_CONFLICT" in data:
            self.bump("conflicts_409")
        else:
            self.violation("conflict_not_409", {"claim_id": claim_id, "status": status,
                                                "response": data.decode(errors="replace")[:500]})

    def send_read(self, c, inflight):
        with self.lock:
            if not self.acked:
                return
            claim_id = random.choice(list(self.acked.keys())[-500:])
            want = self.acked[claim_id]
        self.bump("reads")
        res = self.call(c, inflight, "GET", f"/v1/claims/{claim_id}")
        if res is None:
            return
        status, _, data = res
        if status != 200 or json.loads(data) != want:
            self.violation("read_differs_before_crash", {"claim_id": claim_id, "status": status,
                                                         "want": want, "got": data.decode(errors="replace")[:800]})

    # ----- verification

    def parallel(self, port, fn, items, workers=6):
        local = threading.local()

        def run(item):
            if not hasattr(local, "c"):
                local.c = Client(port, timeout=30)
            for attempt in range(4):
                try:
                    return fn(local.c, item)
                except (OSError, http.client.HTTPException) as e:
                    if attempt == 3:
                        self.violation("verify_request_failed", {"item": str(item)[:200], "error": repr(e)})
                    time.sleep(0.2)

        with ThreadPoolExecutor(workers) as ex:
            list(ex.map(run, items))

    def resolve_unknown(self, port):
        """After a restart: was a claim whose answer was lost recorded?"""
        with self.lock:
            ids = sorted(self.unknown)

        def one(c, claim_id):
            status, _, data = c.request("GET", f"/v1/claims/{claim_id}")
            with self.lock:
                if claim_id in self.acked:
                    self.unknown.discard(claim_id)
                    return
            if status == 200:
                d = json.loads(data)
                with self.lock:
                    self.recovered[claim_id] = d
                    self.unknown.discard(claim_id)
                self.bump("recovered_unacked")
            elif status == 404:
                with self.lock:
                    self.unknown.discard(claim_id)
                    self.not_recorded += 1
            else:
                self.violation("get_unknown_failed", {"claim_id": claim_id, "status": status,
                                                      "response": data.decode(errors="replace")[:500]})

        self.parallel(port, one, ids)

        # a batch is one job of the writer and so one atomic group commit:
        # if its answer was lost, either all of its claims are recorded or none
        with self.lock:
            lost, self.lost_batches = self.lost_batches, []
            recorded = set(self.acked) | set(self.recovered)
        for ids in lost:
            have = [i for i in ids if i in recorded]
            if have and len(have) != len(ids):
                self.violation("batch_partially_recorded", {"claims": len(ids), "recorded": len(have),
                                                            "missing": [i for i in ids if i not in recorded][:20]})
        self.bump("lost_batches_checked", len(lost))

    def verify_acked(self, port, cycle):
        with self.lock:
            items = [(k, v, True) for k, v in self.acked.items()]
            items += [(k, v, False) for k, v in self.recovered.items()]

        def one(c, item):
            claim_id, want, acked = item
            status, _, data = c.request("GET", f"/v1/claims/{claim_id}")
            if status != 200:
                self.violation("acked_claim_lost" if acked else "recorded_claim_lost", {"cycle": cycle, "claim_id": claim_id, "status": status,
                                                    "response": data.decode(errors="replace")[:500],
                                                    "acknowledged": want})
                return
            got = json.loads(data)
            if got != want:
                self.violation("acked_claim_differs" if acked else "recorded_claim_changed", {"cycle": cycle, "claim_id": claim_id,
                                                       "acknowledged": want, "stored": got})
                return
            self.bump("verified_get")
            if acked:
                with self.lock:
                    self.verified_now += 1

        with self.lock:
            self.verified_now = 0
        self.parallel(port, one, items)
        return self.verified_now

    def verify_usage(self, port, cycle):
        # decisions we know (acknowledged or found after a crash), by person and year
        with self.lock:
            known = dict(self.recovered)
            known.update(self.acked)
            by = {}
            for claim_id, d in known.items():
                meta = self.sent[claim_id]
                if d.get("status") == "approved" and d.get("counted"):
                    by.setdefault((meta["person"], meta["year"]), set()).add(claim_id)
            persons = {(m["person"], y) for m in self.sent.values() for y in YEARS}
            known_ids = set(known)

        def one(c, key):
            person, year = key
            body = json.dumps({"county": "wuyi", "id_number": person, "year": year}).encode()
            status, _, data = c.request("POST", "/v1/usage/query", body)
            if status != 200:
                self.violation("usage_query_failed", {"status": status, "response": data.decode(errors="replace")})
                return
            u = json.loads(data)
            self.bump("usage_checks")
            mine = by.get(key, set())
            listed = {x["claim_id"] for x in u.get("claims", [])}
            not_approved = [x for x in u.get("claims", []) if x.get("status") != "approved"]
            masked = person[:6] + "********" + person[14:]
            problems = []
            if not_approved:
                problems.append(f"usage lists claims that are not approved: {not_approved}")
            if u["used"] > LIMIT:
                problems.append(f"used {u['used']} > {LIMIT}")
            if len(mine) > LIMIT:
                problems.append(f"{len(mine)} approved+counted decisions seen > {LIMIT}")
            if u["used"] != len(listed):
                problems.append(f"counter used={u['used']} but the usage index lists {len(listed)} claims")
            if not mine <= listed:
                problems.append(f"approved+counted claims missing from usage: {sorted(mine - listed)}")
            if not listed <= known_ids:
                problems.append(f"usage lists claims this run never saw decided: {sorted(listed - known_ids)}")
            if problems:
                self.violation("usage", {"cycle": cycle, "person": masked, "year": year, "problems": problems,
                                         "usage": {k: u[k] for k in ("used", "limit", "remaining")},
                                         "listed": sorted(listed), "seen": sorted(mine)})

        self.parallel(port, one, sorted(persons))
        return len(persons)

    def run_check(self, server, cycle, when):
        code, out = server.check()
        self.bump("checks_run")
        if code != 0:
            self.violation("store_check_failed", {"cycle": cycle, "when": when, "exit": code, "output": out[-3000:]})
        return code

    # ----- cycles

    def cycle(self, server, cycle):
        hot = [self.people.new() for _ in range(4)]
        warm = [self.people.new() for _ in range(300)]
        t0 = time.monotonic()
        server.start(f"c{cycle:03d}-load")
        before = len(self.acked)
        stop = threading.Event()
        inflight = [0]
        threads = [threading.Thread(target=self.worker, args=(server.port, cycle, hot, warm, stop, inflight), daemon=True)
                   for _ in range(self.args.threads)]
        for t in threads:
            t.start()
        # kill -9 at a random moment while requests are in flight
        delay = random.uniform(self.args.min_load, self.args.max_load)
        time.sleep(delay)
        for _ in range(200):
            with self.lock:
                n = inflight[0]
            if n > 0:
                break
            time.sleep(0.005)
        stop.set()  # no new request from here on; those in flight stay in flight
        server.kill9()
        self.bump("in_flight_at_kill", n)
        for t in threads:
            t.join(60)
        acked_now = len(self.acked) - before
        if self.args.self_test and cycle == 0 and self.acked:
            # plant a wrong acknowledgement: the verification must report it
            victim = next(iter(self.acked))
            self.acked[victim] = dict(self.acked[victim], amount="99999.99")
            print(f"  self-test: planted a wrong amount for {victim}", flush=True)
        # (c) on the crashed store, before anything else opens it
        self.run_check(server, cycle, "after kill -9")
        # restart and verify (a), (b)
        server.start(f"c{cycle:03d}-verify")
        self.resolve_unknown(server.port)
        n_acked = self.verify_acked(server.port, cycle)
        n_people = self.verify_usage(server.port, cycle)
        if not server.stop():
            self.bump("graceful_stop_timeouts")
            self.violation("graceful_stop_timeout", {"cycle": cycle, "log": server.log_path})
        # (c) after the restart and a graceful stop
        self.run_check(server, cycle, "after restart + SIGTERM")
        print(f"cycle {cycle + 1:3d}: killed after {delay:.2f}s with {n} request(s) in flight; "
              f"+{acked_now} acknowledged; verified {n_acked} acknowledged claims, {n_people} person-years; "
              f"violations so far {len(self.violations)} ({time.monotonic() - t0:.1f}s)", flush=True)

    def run(self):
        os.makedirs(self.args.results, exist_ok=True)
        logdir = os.path.join(self.args.results, "crash-test-logs")
        shutil.rmtree(logdir, ignore_errors=True)
        os.makedirs(logdir)
        tmp = tempfile.mkdtemp(prefix="subsidy-crash-")
        store = os.path.join(tmp, "store")
        # a private copy of the binary: a concurrent `cargo build` cannot swap it mid-run
        binary = os.path.join(tmp, "subsidy-service")
        shutil.copy2(self.args.binary, binary)
        server = Server(binary, store, logdir)
        print(f"crash-test: run {self.run_id}, seed {self.args.seed}, {self.args.cycles} cycles, "
              f"{self.args.threads} client threads, store {store}", flush=True)
        t0 = time.monotonic()
        harness_error = None
        cycles_done = 0
        try:
            for i in range(self.args.cycles):
                self.cycle(server, i)
                cycles_done += 1
        except RuntimeError as e:
            harness_error = str(e)
            print(f"crash-test: {e}", file=sys.stderr)
        finally:
            if server.alive():
                server.kill9()
        summary = {
            "tree": os.environ.get("RELIABILITY_TREE", "unknown"),
            "run_id": self.run_id,
            "seed": self.args.seed,
            "cycles_requested": self.args.cycles,
            "cycles_completed": cycles_done,
            "seconds": round(time.monotonic() - t0, 1),
            "claims_sent": len(self.sent),
            "claims_acknowledged": len(self.acked),
            "acked_claims_verified_last_cycle": self.verified_now,
            "unacknowledged_found_recorded": len(self.recovered),
            "unacknowledged_not_recorded": self.not_recorded,
            "violations": len(self.violations),
            "harness_error": harness_error,
            **self.stats,
        }
        print("\n== crash-test summary ==")
        for k, v in summary.items():
            print(f"  {k}: {v}")
        with open(os.path.join(self.args.results, "crash-test-summary.json"), "w") as f:
            json.dump({"summary": summary, "violations": self.violations}, f, ensure_ascii=False, indent=1)
        if self.violations:
            print(f"\n{len(self.violations)} violation(s); details in "
                  f"{os.path.join(self.args.results, 'crash-test-summary.json')}")
            kinds = {}
            for v in self.violations:
                kinds[v["kind"]] = kinds.get(v["kind"], 0) + 1
            for k, n in sorted(kinds.items()):
                print(f"  {k}: {n}")
        if not self.args.keep_store and not self.violations and not harness_error:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"store kept at {store}")
        if harness_error:
            return 2
        return 1 if self.violations else 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--binary", default=os.path.join(REPO, "target", "release", "subsidy-service"))
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--threads", type=int, default=8)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--min-load", type=float, default=0.3, help="shortest load before the kill (s)")
    p.add_argument("--max-load", type=float, default=3.0, help="longest load before the kill (s)")
    p.add_argument("--results", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    p.add_argument("--keep-store", action="store_true")
    p.add_argument("--self-test", action="store_true",
                   help="plant one wrong acknowledgement in cycle 1: the run must then report it and fail")
    args = p.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**31)
    random.seed(args.seed + 1)
    sys.exit(Harness(args).run())


if __name__ == "__main__":
    main()
