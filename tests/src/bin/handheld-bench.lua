-- wrk script for handheld-bench: POST /api/v1/visits with a fresh UUID per request,
-- the thread's device tokens in turn (so no device goes past its rate limit), and the
-- roster's cards in turn. Counts answers by status; with ids_dir set, appends the
-- visit id of every 2xx to ids-<thread>.txt for the bench's durability check.
-- The bench prepends `tokens`, `customers`, `nonce`, `thread_count` and `ids_dir` as Lua globals.

local threads = {}
local next_thread = 0

function setup(thread)
  thread:set("thread_index", next_thread)
  next_thread = next_thread + 1
  table.insert(threads, thread)
end

local counter = 0
-- Global, not local: the main state reads it with thread:get in done().
statuses = {}
local ids_file = nil
local my_tokens = {}

function init(args)
  -- Thread i takes tokens i, i+T, i+2T, …: no two threads share a device.
  local step = thread_count
  for i = thread_index + 1, #tokens, step do
    table.insert(my_tokens, tokens[i])
  end
  if #my_tokens == 0 then my_tokens = tokens end
  if ids_dir ~= "" then
    ids_file = io.open(ids_dir .. "/ids-" .. thread_index .. ".txt", "w")
  end
end

function request()
  counter = counter + 1
  -- Unique per run: the run's nonce, the thread, and the thread's counter.
  local id = string.format("%08x-%04x-4000-8000-%012x", nonce, thread_index, counter)
  local token = my_tokens[(counter % #my_tokens) + 1]
  -- The roster's cards are nfc:04 + 12 hex digits of 1..customers (see the bench).
  local n = ((counter * thread_count + thread_index) % customers) + 1
  local card = string.format("nfc:04%012X", n)
  local body = '{"id":"' .. id .. '","card":"' .. card .. '"}'
  return wrk.format("POST", "/api/v1/visits", {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if ids_file and status >= 200 and status < 300 then
    local visit = string.match(body, '"id":"([0-9a-f%-]+)"')
    ids_file:write(visit or "?", "\n")
  end
end

function done(summary, latency, requests)
  local by_status = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do
      by_status[code] = (by_status[code] or 0) + n
    end
  end
  -- One line the bench parses: key=value pairs, latencies in microseconds.
  local parts = {
    "WRK_RESULT",
    "duration_us=" .. summary.duration,
    "requests=" .. summary.requests,
    "connect_errors=" .. summary.errors.connect,
    "read_errors=" .. summary.errors.read,
    "write_errors=" .. summary.errors.write,
    "timeouts=" .. summary.errors.timeout,
    "p50_us=" .. latency:percentile(50),
    "p99_us=" .. latency:percentile(99),
    "p999_us=" .. latency:percentile(99.9),
    "max_us=" .. latency.max,
  }
  for code, n in pairs(by_status) do
    table.insert(parts, "status_" .. code .. "=" .. n)
  end
  io.write(table.concat(parts, " "), "\n")
end
