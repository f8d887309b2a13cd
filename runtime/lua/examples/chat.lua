-- Terminal example: say one line to an NPC and print the reply as it streams.
--   lua5.4 runtime/lua/examples/chat.lua [npc-id] ["what you say"] [port]
-- With no NPC id it lists the NPCs and talks to the first one. The same loop is what a game does
-- once a frame; here it spins with a short sleep.
local here = arg[0]:match("^(.*)[/\\]") or "."
package.path = here .. "/../?.lua;" .. package.path

local socket = require("socket")
local lorekit = require("lorekit")

local npc_id, line, port = arg[1], arg[2] or "Hello. Who are you?", tonumber(arg[3]) or 7861
if npc_id == "" then npc_id = nil end
local client = lorekit.new({port = port, session = "terminal-example"})
local finished = false

client.on_connected = function(hello)
  print(("connected to %s (protocol %d)"):format(hello.server, hello.protocol))
  if npc_id then
    client:say(npc_id, line, {state = {location = "the terminal", time = "night"}})
  else
    client:list_npcs()
  end
end
client.on_npcs = function(npcs)
  for _, npc in ipairs(npcs) do print(("  %s  (%s)  %s"):format(npc.id, npc.name, npc.greeting)) end
  npc_id = npcs[1] and npcs[1].id
  if npc_id then
    print(("you -> %s: %s"):format(npc_id, line))
    client:say(npc_id, line)
  else
    finished = true
  end
end
client.on_token = function(_, text) io.write(text); io.flush() end
client.on_done = function(_, reply)
  print(("\n[%s, %d tokens, %.0f ms]"):format(reply.finish_reason, reply.tokens.completion, reply.timings.total_ms))
  finished = true
end
client.on_error = function(_, code, message)
  print(("\nerror %s: %s"):format(code, message))
  finished = true
end

client:connect()
local deadline = socket.gettime() + 120
while not finished and socket.gettime() < deadline do
  client:update()
  socket.sleep(0.01)
end
client:close()
os.exit(finished and 0 or 1)
