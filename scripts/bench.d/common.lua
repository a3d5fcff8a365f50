-- Shared helpers for the wrk scenarios of scripts/bench.
--
-- (Batches and the preload are driven by batchload.py, which numbers people
-- the same way.) Every scenario script does `dofile(BENCH_D .. "/common.lua")`, sets
-- `expect` (the status every response must have, or nil for any 2xx) and
-- defines request(). This file provides:
--   * setup()/init(): per-thread id (`tid`) and the run's arguments;
--   * person(i): a valid GB 11643-1999 resident ID for person number i;
--   * response(): counts non-2xx and unexpected statuses per thread;
--   * done(): prints one machine-readable `BENCH {...}` line for the report.
-- Arguments (after `--` on the wrk command line):
--   1 base   first person number of this run's block
--   2 block  how many person numbers this run may use (a thread stops when
--            its share is used up, so runs are bounded in count too)
--   3 nthreads  the -t value
--   4 label  run label (unique per wrk invocation: makes claim ids unique)
--   5 pool file (evaluations.lua)

local threads = {}
local next_tid = 0

function setup(thread)
   thread:set("tid", next_tid)
   next_tid = next_tid + 1
   table.insert(threads, thread)
end

auth = "Bearer local-platform-key"
headers = { ["Authorization"] = auth, ["Content-Type"] = "application/json" }

function init(args)
   base = tonumber(args[1]) or 0
   block = tonumber(args[2]) or 1000000
   nthreads = tonumber(args[3]) or 1
   label = args[4] or "x"
   extra = args[5]
   n = 0           -- requests built by this thread
   bad = 0         -- non-2xx responses
   unexpected = 0  -- responses whose status is not `expect`
   item_errors = 0 -- batch items answered with an error instead of a decision
   responses = 0
   if init_scenario then init_scenario(args) end
end

-- GB 11643-1999 -------------------------------------------------------------
local W = { 7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2 }
local CHECK = "10X98765432"
local EPOCH_DAY0 = -2922 -- 1962-01-01 as days since 1970-01-01
local date_cache = {}

local function birth(day)
   local s = date_cache[day]
   if not s then
      s = os.date("!%Y%m%d", (EPOCH_DAY0 + day) * 86400 + 43200)
      date_cache[day] = s
   end
   return s
end

function id_number(prefix, i)
   -- i -> birth date (1000 people per day from 1962-01-01) and sequence.
   local day = math.floor(i / 1000)
   local seq = i % 1000
   local s17 = prefix .. birth(day) .. string.format("%03d", seq)
   local sum = 0
   for k = 1, 17 do
      sum = sum + (string.byte(s17, k) - 48) * W[k]
   end
   local c = (sum % 11) + 1
   return s17 .. string.sub(CHECK, c, c)
end

-- The next person number of this thread's share of the block, or nil when
-- the share is used up (the thread then stops).
function next_person()
   local i = n * nthreads + tid
   if i >= block then
      wrk.thread:stop()
      return nil
   end
   n = n + 1
   return base + i
end

-- A Wuyi qualification_training claim for a new person (scenarios 3 and 5).
function qualification_claim(i)
   return string.format(
      '{"claim_id":"BQ-%d","county":"wuyi","kind":"qualification_training","event_date":"2020-06-15",'
      .. '"applicant":{"id_number":"%s","name":"测试","local_hukou":true,"residence_permit":false,'
      .. '"employed_in_county":true,"unemployment_registered":false,"receives_monthly_pension":false,'
      .. '"public_institution_staff":false,"groups":["enterprise_employee"]},'
      .. '"details":{"occupation_code":"6-31-01-03","level":"intermediate","certificate_number":"BQZ%d","payee":"person"}}',
      i, id_number("330723", i), i)
end

function response(status, hdrs, body)
   responses = responses + 1
   if status < 200 or status > 299 then bad = bad + 1 end
   if expect and status ~= expect then unexpected = unexpected + 1 end
   if check_body then check_body(status, body) end
end

function done(summary, latency, requests)
   local t = { bad = 0, unexpected = 0, item_errors = 0, built = 0, responses = 0 }
   for _, th in ipairs(threads) do
      t.bad = t.bad + (th:get("bad") or 0)
      t.unexpected = t.unexpected + (th:get("unexpected") or 0)
      t.item_errors = t.item_errors + (th:get("item_errors") or 0)
      t.built = t.built + (th:get("n") or 0)
      t.responses = t.responses + (th:get("responses") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,'
      .. '"mean_us":%.1f,"non2xx":%d,"unexpected":%d,"item_errors":%d,"socket_errors":%d,"timeouts":%d,'
      .. '"built":%d,"responses":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean,
      t.bad, t.unexpected, t.item_errors, e.connect + e.read + e.write, e.timeout, t.built, t.responses))
end
