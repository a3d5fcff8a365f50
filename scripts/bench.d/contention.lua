-- Scenario 4: POST /v1/claims with contention: every claim names one of a
-- few people (8), so their yearly limit (3 counted grants) is hit at once and
-- the rest are recorded as rejected (still 201). Claim ids and certificates
-- are unique per request.
dofile(os.getenv("BENCH_D") .. "/common.lua")
expect = 201
local PEOPLE = 8
local FIRST = 0 -- person numbers 0..7 are kept for this scenario (scripts/bench)
local levels = { "junior", "intermediate", "senior", "technician" }
local dates = { "2020-06-15", "2020-09-01", "2021-03-10" }
local ids = {}

function init_scenario(args)
   for p = 0, PEOPLE - 1 do ids[p] = id_number("330723", FIRST + p) end
end

function request()
   n = n + 1
   local p = (n * 7 + tid) % PEOPLE
   local body = string.format(
      '{"claim_id":"CT-%s-%d-%d","county":"wuyi","kind":"qualification_training","event_date":"%s",'
      .. '"applicant":{"id_number":"%s","name":"测试","local_hukou":true,"employed_in_county":true,'
      .. '"groups":["enterprise_employee"]},'
      .. '"details":{"occupation_code":"6-31-01-03","level":"%s","certificate_number":"CTZ-%s-%d-%d","payee":"person"}}',
      label, tid, n, dates[(n % #dates) + 1], ids[p], levels[(n % #levels) + 1], label, tid, n)
   return wrk.format("POST", "/v1/claims", headers, body)
end
