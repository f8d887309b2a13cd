-- Token check for the Lua client: usage lua5.4 auth_check.lua HOST PORT TOKEN
-- A wrong token must end in on_error(nil or id, "unauthorized") and no reconnect loop; the right
-- token must connect and list the NPCs. Prints one JSON line: {"wrong": {...}, "right": {...}}.
local here = arg[0]:match("^(.*)[/\\]") or "."
package.path = here .. "/../../lua/?.lua;" .. package.path
local socket = require("socket")
local lorekit = require("lorekit")

local host, port, token = arg[1], tonumber(arg[2]), arg[3]

local function try(with_token, seconds)
  local seen = {connects = 0, errors = {}, npcs = nil}
  local c = lorekit.new({host = host, port = port, token = with_token, reconnect_min = 0.1, reconnect_max = 0.2})
  c.on_connected = function() seen.connects = seen.connects + 1; c:list_npcs() end
  c.on_error = function(_, code) table.insert(seen.errors, code) end
  c.on_npcs = function(npcs) seen.npcs = #npcs end
  local opens = 0
  local open = c._open
  c._open = function(self) opens = opens + 1; return open(self) end
  c:connect()
  local deadline = socket.gettime() + seconds
  while socket.gettime() < deadline and not seen.npcs do
    c:update()
    socket.sleep(0.01)
  end
  c:close()
  return {connects = seen.connects, errors = lorekit.json.array(seen.errors), npcs = seen.npcs, attempts = opens}
end

io.write(lorekit.json.encode({wrong = try("wrong-" .. token, 2), right = try(token, 30)}), "\n")
