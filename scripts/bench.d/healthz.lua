-- Scenario 1: GET /healthz, the box's HTTP ceiling.
dofile(os.getenv("BENCH_D") .. "/common.lua")
expect = 200
wrk.method = "GET"
wrk.path = "/healthz"
