-- wrk -s test/fake_gpu/wrk_completions.lua: POST a small /v1/completions.
wrk.method = "POST"
wrk.path = "/v1/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"npc-llm","prompt":"The villager asks: what should we build next?","max_tokens":16,"temperature":0}'
