-- The shared conformance scenario (runtime/conformance/SCENARIO.md), driven through the Lua client.
-- Usage: lua5.4 lua_conformance.lua HOST PORT SCENARIO_JSON LABEL
-- Prints one JSON line per step on stdout; the runner judges them (runtime/conformance/judge.py).

local here = arg[0]:match("^(.*)[/\\]") or "."
package.path = here .. "/../../lua/?.lua;" .. package.path

local socket = require("socket")
local lorekit = require("lorekit")
local json = lorekit.json

local host, port, scenario_path, label = arg[1], tonumber(arg[2]), arg[3], arg[4] or "lua"
local file = assert(io.open(scenario_path, "rb"))
local scenario = assert(json.decode(file:read("*a")))
file:close()
local session = scenario.session_prefix .. "-" .. label

local function emit(t)
  io.stdout:write(json.encode(t), "\n")
  io.stdout:flush()
end

local client = lorekit.new({host = host, port = port, client = "conformance/" .. label,
                            reconnect_min = 0.2, reconnect_max = 1, keepalive = scenario.idle.keepalive_s})
local log = {}        -- id -> list of events seen through the client's handlers
local seen = {}       -- counters of connection handlers
local function record(id, ev)
  if id == nil then return end
  log[id] = log[id] or {}
  table.insert(log[id], ev)
end

client.on_connected = function(hello) seen.connected = (seen.connected or 0) + 1; seen.hello = hello end
client.on_disconnected = function(reason) seen.disconnected = (seen.disconnected or 0) + 1; seen.reason = reason end
client.on_npcs = function(npcs, id) record(id, {type = "npcs", npcs = npcs}) end
client.on_token = function(id, text) record(id, {type = "token", text = text}) end
client.on_sentence = function(id, index, text) record(id, {type = "sentence", index = index, text = text}) end
client.on_done = function(id, reply)
  record(id, {type = "done", text = reply.text, finish_reason = reply.finish_reason, npc = reply.npc,
              session = reply.session, completion_tokens = reply.tokens and reply.tokens.completion})
end
client.on_error = function(id, code, message) record(id, {type = "error", code = code, message = message}) end
client.on_event = function(ev)
  if ev.type == "pong" then
    seen.pongs = (seen.pongs or 0) + 1
    record(ev.id, {type = "pong"})
  end
end

-- Poll the client like a game loop until cond() is true or the timeout passes.
local function pump(cond, timeout, on_frame)
  local deadline = socket.gettime() + timeout
  while socket.gettime() < deadline do
    client:update()
    if on_frame then on_frame() end
    if cond() then return true end
    socket.sleep(0.005)
  end
  return false
end

local function finished(id)
  return function()
    for _, ev in ipairs(log[id] or {}) do
      if ev.type == "done" or ev.type == "error" or ev.type == "npcs" then return true end
    end
    return false
  end
end

local function events_of(id)
  return json.array(log[id] or {})
end

local t = scenario.timeouts_s
local start = socket.gettime()
client:connect()
local ok = pump(function() return seen.connected end, t.connect)
emit({step = "connect", ok = ok, protocol = seen.hello and seen.hello.protocol,
      server = seen.hello and seen.hello.server, elapsed_ms = (socket.gettime() - start) * 1000})
if not ok then emit({step = "end"}); os.exit(1) end

local id = client:list_npcs()
pump(finished(id), t.step)
local listed = log[id] and log[id][1] and log[id][1].npcs or json.array({})
emit({step = "list_npcs", events = events_of(id)})
local npc = scenario.npc or (listed[1] and listed[1].id) or "missing"

-- The player types the line before saying it: no answer for the typing; the one to an unknown NPC
-- gets its error. A ping fences them: the server answers in order, so after the pong all is in.
local turn, typing = scenario.turn, scenario.typing
local typed = client:typing(npc, typing.text, {session = session, state = turn.state})
local typed_bad = client:typing(typing.bad_npc, typing.text, {session = session})
local fence = client:ping()
local timed_out = not pump(function() return log[fence] ~= nil end, t.step)
emit({step = "typing", npc = npc, bad_npc = typing.bad_npc, id = typed, bad_id = typed_bad, timed_out = timed_out,
      events = events_of(typed), bad_events = events_of(typed_bad)})

id = client:say(npc, turn.text, {session = session, state = turn.state, max_tokens = turn.max_tokens,
                                 temperature = turn.temperature})
start = socket.gettime()
timed_out = not pump(finished(id), t.step)
emit({step = "turn", npc = npc, session = session, timed_out = timed_out, events = events_of(id),
      total_ms = (socket.gettime() - start) * 1000})

local cancel = scenario.cancel
id = client:say(npc, cancel.text, {session = session, max_tokens = cancel.max_tokens,
                                   temperature = cancel.temperature})
local cancel_after
timed_out = not pump(finished(id), t.step, function()
  local evs = log[id] or {}
  if not cancel_after and #evs > 0 and evs[1].type == "token" then
    cancel_after = #evs
    client:cancel(id)
  end
end)
emit({step = "cancel", npc = npc, session = session, timed_out = timed_out, events = events_of(id),
      cancel_sent_after_events = cancel_after})

id = client:say(scenario.unknown_npc.npc, scenario.unknown_npc.text, {session = session})
timed_out = not pump(finished(id), t.step)
emit({step = "unknown_npc", npc = scenario.unknown_npc.npc, timed_out = timed_out, events = events_of(id)})

-- Idle: the server (started with a short idle timeout) must not drop a client that keeps alive.
local drops, pongs = seen.disconnected or 0, seen.pongs or 0
pump(function() return false end, scenario.idle.seconds)
id = client:list_npcs()
pump(finished(id), t.step)
emit({step = "idle", seconds = scenario.idle.seconds, disconnected = (seen.disconnected or 0) > drops,
      pongs = (seen.pongs or 0) - pongs, events = events_of(id)})

-- Reconnect: a long turn is in flight when the runner restarts the server (it does so when it
-- reads the await_restart line of every client); that turn must still end exactly once.
local before = seen.connected
local inflight = client:say(npc, cancel.text, {session = session, max_tokens = cancel.max_tokens})
pump(function() return false end, 1.0) -- let the request go out
emit({step = "await_restart"})
local reconnected = pump(function() return (seen.disconnected or 0) > 0 and seen.connected > before end, t.reconnect)
local npcs_after = json.array({})
if reconnected then
  id = client:list_npcs()
  pump(finished(id), t.step)
  npcs_after = events_of(id)
end
pump(finished(inflight), t.step)
pump(function() return false end, 0.5) -- a duplicate final event would show up here
emit({step = "reconnect", disconnected = (seen.disconnected or 0) > 0, reason = seen.reason,
      reconnected = reconnected, events = npcs_after, inflight_events = events_of(inflight)})
client:close()
emit({step = "end"})
