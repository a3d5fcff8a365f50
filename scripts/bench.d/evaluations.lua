-- Scenario 2: POST /v1/evaluations, cycling through a pool of realistic
-- claims of every kind (one JSON claim per line in the pool file, argument 5).
dofile(os.getenv("BENCH_D") .. "/common.lua")
expect = 200
local reqs = {}
local k = 0

function init_scenario(args)
   for line in io.lines(args[5]) do
      if #line > 0 then
         table.insert(reqs, wrk.format("POST", "/v1/evaluations", headers, line))
      end
   end
   k = tid -- threads start at different places in the pool
end

function request()
   k = k + 1
   n = n + 1
   return reqs[(k % #reqs) + 1]
end
