-- Scenario 3: POST /v1/claims, a new person and certificate per request
-- (Wuyi qualification_training, 2020-06-15): every answer must be 201.
dofile(os.getenv("BENCH_D") .. "/common.lua")
expect = 201

function request()
   local i = next_person()
   if not i then return wrk.format("GET", "/healthz") end
   return wrk.format("POST", "/v1/claims", headers, qualification_claim(i))
end
