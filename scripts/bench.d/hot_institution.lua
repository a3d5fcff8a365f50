-- PostgreSQL hot row: POST /v1/claims, every claim an investment of the same
-- Changxing institution (CX §3(1)), so every claim reads and raises that
-- institution's one cumulative total (a single row, locked per claim).
-- Invoice references are unique per request; every answer must be 201.
dofile(os.getenv("BENCH_D") .. "/common.lua")
expect = 201

function request()
   n = n + 1
   local body = string.format(
      '{"claim_id":"HOT-%s-%d-%d","county":"changxing","kind":"institution_investment","event_date":"2020-11-11",'
      .. '"organization":{"credit_code":"91330522MA0002001E","name":"培训机构","industry_code":"P8391"},'
      .. '"details":{"category":"equipment","investment_amount":"10.00","invoice_reference":"HOT-%s-%d-%d"}}',
      label, tid, n, label, tid, n)
   return wrk.format("POST", "/v1/claims", headers, body)
end
