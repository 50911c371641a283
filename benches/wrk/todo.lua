-- wrk script for scripts/bench: one file, three workloads.
--
--   wrk -t2 -c64 -d10s -s benches/wrk/todo.lua URL -- MODE IDS_FILE ORDER_FIELD
--
-- MODE        create | get | mix   (mix = 90 % GET, 5 % POST, 5 % PATCH per request)
-- IDS_FILE    one todo id per line (pre-created todos); needed by get and mix
-- ORDER_FIELD name of the integer ordering field in a create body: "order" for the
--             todo service, "position" for the Express peer
--
-- Request strings are built once per thread in init() so the Lua side costs as
-- little as possible per request. done() prints one machine-readable line:
--   BENCH requests=… duration_us=… p50_us=… p99_us=… … err_status=… err_timeout=…
-- err_status is wrk's "Non-2xx or 3xx responses" (status > 399); socket errors are
-- err_connect/err_read/err_write/err_timeout.

local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
end

local mode, gets, patches, create_req
local n_ids = 0

local function load_ids(path)
  local ids = {}
  local f = assert(io.open(path, "r"), "cannot open ids file " .. tostring(path))
  for line in f:lines() do
    if line ~= "" then ids[#ids + 1] = line end
  end
  f:close()
  assert(#ids > 0, "ids file " .. path .. " is empty")
  return ids
end

function init(args)
  mode = args[1] or "create"
  local ids_file = args[2]
  local order_field = args[3] or "order"
  local tno = thread_no or 1
  math.randomseed(os.time() * 1000 + tno * 7919)

  local json = { ["Content-Type"] = "application/json" }
  create_req = wrk.format("POST", "/api/todos", json,
    string.format('{"title":"bench todo %d","completed":false,"%s":1}', tno, order_field))

  if mode == "get" or mode == "mix" then
    local ids = load_ids(ids_file)
    n_ids = #ids
    gets, patches = {}, {}
    for i, id in ipairs(ids) do
      gets[i] = wrk.format("GET", "/api/todos/" .. id)
      if mode == "mix" then
        patches[i] = wrk.format("PATCH", "/api/todos/" .. id, json, '{"completed":true}')
      end
    end
  elseif mode ~= "create" then
    error("unknown mode " .. mode .. " (create|get|mix)")
  end
end

function request()
  if mode == "create" then
    return create_req
  elseif mode == "get" then
    return gets[math.random(n_ids)]
  else
    local r = math.random(100)
    if r <= 90 then
      return gets[math.random(n_ids)]
    elseif r <= 95 then
      return create_req
    else
      return patches[math.random(n_ids)]
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH requests=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
