-- LÖVE (love2d.org) example: type a line, press Enter, and the NPC's reply streams onto the screen.
-- In your game, put lorekit.lua next to main.lua (LÖVE ships LuaSocket). To try it from the repo,
-- start `lorekit serve`, then run `love runtime/lua/examples/love`. Tab: next NPC, Escape: stop.
package.path = "runtime/lua/?.lua;" .. package.path -- `love runtime/lua/examples/love` from the repo root

local lorekit = require("lorekit")

local client
local npcs, current = {}, 1
local typed, log, turn = "", {}, nil
local state = {location = "the tavern", time = "evening"} -- what the game knows right now

local function say(text)
  log[#log + 1] = text
  if #log > 18 then table.remove(log, 1) end
end

function love.load()
  love.keyboard.setKeyRepeat(true)
  client = lorekit.new({host = "127.0.0.1", port = 7861, session = "love-example"})
  client.on_connected = function() say("(connected)"); client:list_npcs() end
  client.on_disconnected = function(reason) say("(connection lost: " .. reason .. "; retrying)") end
  client.on_npcs = function(list)
    npcs = list
    current = 1
    if npcs[1] then say(npcs[1].name .. ": " .. npcs[1].greeting) end
  end
  client.on_token = function(id, text)
    if id == turn then log[#log] = log[#log] .. text end
  end
  client.on_sentence = function(id, index, text)
    -- Start text-to-speech here: each sentence arrives as soon as it is complete.
  end
  client.on_done = function(id, reply)
    if id == turn then
      turn = nil
      if reply.finish_reason == "cancelled" then log[#log] = log[#log] .. " (stopped)" end
    end
  end
  client.on_error = function(id, code, message)
    say("[" .. code .. "] " .. message)
    if id == turn then turn = nil end
  end
  client:connect()
end

function love.update()
  client:update() -- non-blocking: reads what arrived, sends what is queued
end

function love.textinput(t)
  typed = typed .. t
  -- Each time a word ends, the line so far goes ahead: the reply then starts sooner on Enter.
  if t == " " and npcs[current] and not turn then client:typing(npcs[current].id, typed, {state = state}) end
end

function love.keypressed(key)
  if key == "backspace" then
    typed = typed:sub(1, -2)
  elseif key == "tab" and #npcs > 0 then
    current = current % #npcs + 1
    say("(now talking to " .. npcs[current].name .. ")")
  elseif key == "escape" and turn then
    client:cancel(turn)
  elseif key == "return" and typed ~= "" and npcs[current] and not turn then
    say("You: " .. typed)
    say(npcs[current].name .. ": ")
    turn = client:say(npcs[current].id, typed, {state = state})
    typed = ""
  end
end

function love.draw()
  local npc = npcs[current]
  love.graphics.print(npc and ("Talking to " .. npc.name .. " (Tab: next NPC)") or "Waiting for lorekit serve...", 10, 10)
  for i, line in ipairs(log) do
    love.graphics.printf(line, 10, 20 + i * 22, love.graphics.getWidth() - 20)
  end
  love.graphics.print("> " .. typed, 10, love.graphics.getHeight() - 30)
end
