-- LoreKit game-protocol client for Lua 5.1-5.4 and LuaJIT (LÖVE), on LuaSocket.
--
-- Non-blocking: the socket never waits. Call client:update() once a frame (love.update) and
-- the handlers you set (on_token, on_sentence, on_done, on_error, ...) run from inside it.
-- Protocol: runtime/PROTOCOL.md (newline-delimited JSON over TCP, version 1).
--
--   local lorekit = require("lorekit")
--   local npc = lorekit.new({host = "127.0.0.1", port = 7861})
--   npc.on_sentence = function(id, index, text) print(text) end
--   npc:connect()
--   npc:say("mara-vell", "Who leads the Ash Guild?")
--   -- in love.update: npc:update()

local socket = require("socket")

local lorekit = {VERSION = "0.1.0", PROTOCOL = 1}

---------------------------------------------------------------------------------------------
-- JSON: a small encoder/decoder, enough for the protocol (UTF-8 text, \u escapes, nesting).
---------------------------------------------------------------------------------------------
local json = {}
lorekit.json = json

local array_mt = {__lorekit_array = true}

-- Mark a table as a JSON array (needed for empty arrays; non-empty 1..n tables are arrays anyway).
function json.array(t)
  return setmetatable(t or {}, array_mt)
end

local escapes = {['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                 ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t'}

local function escape_char(c)
  return escapes[c] or string.format("\\u%04x", c:byte())
end

local function is_array(t)
  if getmetatable(t) == array_mt then return true end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  if n == 0 then return false end
  for i = 1, n do
    if t[i] == nil then return false end
  end
  return true
end

local encode_value

local function encode_table(t, out, depth)
  if depth > 64 then error("lorekit.json: nesting too deep") end
  if is_array(t) then
    out[#out + 1] = "["
    for i = 1, #t do
      if i > 1 then out[#out + 1] = "," end
      encode_value(t[i], out, depth + 1)
    end
    out[#out + 1] = "]"
    return
  end
  local keys = {}
  for k in pairs(t) do
    if type(k) ~= "string" then error("lorekit.json: object keys must be strings") end
    keys[#keys + 1] = k
  end
  table.sort(keys) -- stable output makes logs and tests readable
  out[#out + 1] = "{"
  for i, k in ipairs(keys) do
    if i > 1 then out[#out + 1] = "," end
    encode_value(k, out, depth + 1)
    out[#out + 1] = ":"
    encode_value(t[k], out, depth + 1)
  end
  out[#out + 1] = "}"
end

encode_value = function(v, out, depth)
  local kind = type(v)
  if kind == "string" then
    out[#out + 1] = '"' .. v:gsub('[%c"\\]', escape_char) .. '"'
  elseif kind == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("lorekit.json: cannot encode " .. tostring(v)) end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then
      out[#out + 1] = string.format("%d", v)
    else
      out[#out + 1] = string.format("%.17g", v)
    end
  elseif kind == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif kind == "nil" or v == json.null then
    out[#out + 1] = "null"
  elseif kind == "table" then
    encode_table(v, out, depth)
  else
    error("lorekit.json: cannot encode a " .. kind)
  end
end

-- A sentinel that encodes as null (decoding turns null into nil).
json.null = setmetatable({}, {__tostring = function() return "null" end})

function json.encode(v)
  local out = {}
  encode_value(v, out, 0)
  return table.concat(out)
end

local function utf8_char(cp)
  if cp < 0x80 then return string.char(cp) end
  if cp < 0x800 then
    return string.char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
  end
  if cp < 0x10000 then
    return string.char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
  end
  return string.char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
                     0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

local decode_value

local function decode_error(s, pos, what)
  error(string.format("lorekit.json: %s at byte %d", what, pos), 0)
end

local function skip_ws(s, pos)
  return s:find("[^ \t\r\n]", pos) or #s + 1
end

local simple_escapes = {['"'] = '"', ['\\'] = '\\', ['/'] = '/', b = '\b', f = '\f', n = '\n', r = '\r', t = '\t'}

local function decode_string(s, pos)
  local parts, i = {}, pos + 1
  while true do
    local j = s:find('["\\]', i)
    if not j then decode_error(s, pos, "unterminated string") end
    parts[#parts + 1] = s:sub(i, j - 1)
    if s:sub(j, j) == '"' then return table.concat(parts), j + 1 end
    local c = s:sub(j + 1, j + 1)
    if simple_escapes[c] then
      parts[#parts + 1] = simple_escapes[c]
      i = j + 2
    elseif c == "u" then
      local cp = tonumber(s:sub(j + 2, j + 5), 16)
      if not cp then decode_error(s, j, "bad \\u escape") end
      i = j + 6
      if cp >= 0xD800 and cp <= 0xDBFF and s:sub(i, i + 1) == "\\u" then
        local low = tonumber(s:sub(i + 2, i + 5), 16)
        if low and low >= 0xDC00 and low <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (low - 0xDC00)
          i = i + 6
        end
      end
      parts[#parts + 1] = utf8_char(cp)
    else
      decode_error(s, j, "bad escape")
    end
  end
end

local function decode_container(s, pos, close, read_item)
  local pos2 = skip_ws(s, pos + 1)
  if s:sub(pos2, pos2) == close then return pos2 + 1 end
  while true do
    pos2 = read_item(skip_ws(s, pos2))
    pos2 = skip_ws(s, pos2)
    local c = s:sub(pos2, pos2)
    if c == close then return pos2 + 1 end
    if c ~= "," then decode_error(s, pos2, "expected ',' or '" .. close .. "'") end
    pos2 = pos2 + 1
  end
end

decode_value = function(s, pos)
  pos = skip_ws(s, pos)
  local c = s:sub(pos, pos)
  if c == "{" then
    local obj = {}
    local after = decode_container(s, pos, "}", function(p)
      if s:sub(p, p) ~= '"' then decode_error(s, p, "expected a key") end
      local key, p2 = decode_string(s, p)
      p2 = skip_ws(s, p2)
      if s:sub(p2, p2) ~= ":" then decode_error(s, p2, "expected ':'") end
      local value
      value, p2 = decode_value(s, p2 + 1)
      obj[key] = value
      return p2
    end)
    return obj, after
  elseif c == "[" then
    local arr = json.array({})
    local after = decode_container(s, pos, "]", function(p)
      local value, p2 = decode_value(s, p)
      arr[#arr + 1] = value
      return p2
    end)
    return arr, after
  elseif c == '"' then
    return decode_string(s, pos)
  elseif s:sub(pos, pos + 3) == "true" then
    return true, pos + 4
  elseif s:sub(pos, pos + 4) == "false" then
    return false, pos + 5
  elseif s:sub(pos, pos + 3) == "null" then
    return nil, pos + 4
  end
  local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if num and #num > 0 and tonumber(num) then return tonumber(num), pos + #num end
  decode_error(s, pos, "unexpected character")
end

-- Decode one JSON text; returns the value, or nil and an error message.
function json.decode(s)
  local ok, value, pos = pcall(decode_value, s, 1)
  if not ok then return nil, value end
  if skip_ws(s, pos) <= #s then return nil, "lorekit.json: trailing characters" end
  return value
end

---------------------------------------------------------------------------------------------
-- The client.
---------------------------------------------------------------------------------------------
local Client = {}
Client.__index = Client

local FINAL = {turn = {done = true, error = true}, list_npcs = {npcs = true, error = true},
               ping = {pong = true, error = true}, status = {status = true, error = true},
               reset = {reset = true, error = true}, hello = {hello = true, error = true}}

-- Options: host, port, token, client (a name for the server log), session (default session),
-- reconnect (default true), reconnect_min / reconnect_max (seconds of backoff, 0.5 / 5),
-- connect_timeout (seconds one connection attempt may take, 5), keepalive (ping after this many
-- idle seconds, 60; false: never).
function lorekit.new(opts)
  opts = opts or {}
  local self = setmetatable({}, Client)
  self.host = opts.host or "127.0.0.1"
  self.port = opts.port or 7861
  self.token = opts.token
  self.client_name = opts.client or ("lorekit-lua/" .. lorekit.VERSION)
  self.session = opts.session or "default"
  self.reconnect = opts.reconnect ~= false
  self.reconnect_min = opts.reconnect_min or 0.5
  self.reconnect_max = opts.reconnect_max or 5
  self.connect_timeout = opts.connect_timeout or 5
  -- The server closes connections silent for 300 s; a ping after `keepalive` idle seconds keeps
  -- this one open while the player is away from NPCs (false: never).
  self.keepalive = opts.keepalive == nil and 60 or opts.keepalive
  self.last_send = socket.gettime()
  self.state = "idle" -- idle | connecting | handshake | connected | waiting | closed
  self.pending = {}   -- id -> {kind = request type, sent = bool}
  self.queue = {}     -- lines waiting for a connection
  self.outbuf = ""
  self.inbuf = ""
  self.next_id = 0
  self.backoff = self.reconnect_min
  return self
end

local function call(handler, ...)
  if handler then handler(...) end
end

function Client:is_connected()
  return self.state == "connected"
end

-- Start connecting (returns at once; on_connected runs from update() when the server answers).
function Client:connect()
  self.wanted = true
  if self.state == "idle" or self.state == "waiting" or self.state == "closed" then self:_open() end
end

function Client:_open()
  self.sock = socket.tcp()
  self.sock:settimeout(0)
  self.sock:setoption("tcp-nodelay", true)
  local ok, err = self.sock:connect(self.host, self.port)
  if ok or err == "timeout" or err == "Operation already in progress" then
    self.state = "connecting"
    self.connect_deadline = socket.gettime() + self.connect_timeout
  else
    self:_lost("connect failed: " .. tostring(err))
  end
end

function Client:_new_id()
  self.next_id = self.next_id + 1
  return "lua-" .. self.next_id
end

-- Queue a request; it goes out on the next update() once connected. `no_answer` (typing): not
-- pending, since nothing ends it; a drop then reports nothing for it.
function Client:_request(req, no_answer)
  req.id = req.id or self:_new_id()
  if not no_answer then self.pending[req.id] = {kind = req.type, sent = false} end
  self.queue[#self.queue + 1] = {id = req.id, line = json.encode(req) .. "\n"}
  return req.id
end

function Client:list_npcs()
  return self:_request({type = "list_npcs"})
end

-- Player says `text` to `npc`. opts: session, state (table), max_tokens, temperature,
-- stream ("tokens" | "sentences" | "none"). Returns the turn id used in every handler call.
function Client:say(npc, text, opts)
  opts = opts or {}
  return self:_request({type = "turn", npc = npc, text = text, session = opts.session or self.session,
                        state = opts.state, max_tokens = opts.max_tokens, temperature = opts.temperature,
                        stream = opts.stream})
end

-- The line the player has typed so far (send it on each pause or word, with the opts the turn will
-- carry: session, state): the server processes it ahead, so the reply starts sooner. No answer comes;
-- bad input gets on_error(id, code, message) with the id this returns.
function Client:typing(npc, text, opts)
  opts = opts or {}
  return self:_request({type = "typing", npc = npc, text = text, session = opts.session or self.session,
                        state = opts.state}, true)
end

-- Stop a turn; it then ends with on_done(id, reply) where reply.finish_reason == "cancelled".
function Client:cancel(id)
  self.queue[#self.queue + 1] = {line = json.encode({type = "cancel", id = id}) .. "\n"}
end

function Client:reset(npc, session)
  return self:_request({type = "reset", npc = npc, session = session or self.session})
end

function Client:ping()
  return self:_request({type = "ping"})
end

function Client:status()
  return self:_request({type = "status"})
end

-- Close for good (no reconnect). Requests in flight end with on_error(id, "disconnected", ...).
function Client:close()
  self.wanted = false
  if self.sock then self.sock:close() end
  self.sock = nil
  self:_fail_sent("client closed")
  self.state = "closed"
end

function Client:_fail_sent(reason)
  local failed = {}
  for id, p in pairs(self.pending) do
    if p.sent then failed[#failed + 1] = id end
  end
  table.sort(failed)
  for _, id in ipairs(failed) do
    self.pending[id] = nil
    call(self.on_error, id, "disconnected", reason)
  end
end

function Client:_lost(reason)
  local was_connected = self.state == "connected" or self.state == "handshake"
  if self.sock then self.sock:close() end
  self.sock = nil
  self.inbuf, self.outbuf = "", ""
  self:_fail_sent(reason)
  if was_connected then call(self.on_disconnected, reason) end
  if self.reconnect and self.wanted then
    self.state = "waiting"
    self.retry_at = socket.gettime() + self.backoff
    self.backoff = math.min(self.backoff * 2, self.reconnect_max)
  else
    self.state = "closed"
  end
end

-- Drive the connection: call once a frame. Never blocks.
function Client:update()
  if self.state == "waiting" and socket.gettime() >= self.retry_at then self:_open() end
  if self.state == "connecting" then self:_check_connected() end
  if self.state == "handshake" or self.state == "connected" then
    if self.keepalive and self.state == "connected" and socket.gettime() - self.last_send >= self.keepalive then
      self:ping()
    end
    self:_flush()
    if self.sock then self:_read() end
  end
end

function Client:_check_connected()
  local _, writable = socket.select(nil, {self.sock}, 0)
  if not writable or not writable[1] then
    -- Windows never reports a refused connect as writable: give up after connect_timeout and retry.
    if socket.gettime() > self.connect_deadline then self:_lost("connect timed out") end
    return
  end
  local ok, err = self.sock:connect(self.host, self.port)
  if ok or err == "already connected" then
    self.state = "handshake"
    -- hello always goes first: it carries the token when the server has one.
    local hello = {type = "hello", id = self:_new_id(), version = lorekit.PROTOCOL,
                   token = self.token, client = self.client_name}
    self.hello_id = hello.id
    self.outbuf = json.encode(hello) .. "\n"
  else
    self:_lost("connect failed: " .. tostring(err))
  end
end

function Client:_flush()
  if self.state == "connected" and #self.queue > 0 then
    local lines = {}
    for _, item in ipairs(self.queue) do
      lines[#lines + 1] = item.line
      if item.id and self.pending[item.id] then self.pending[item.id].sent = true end
    end
    self.queue = {}
    self.outbuf = self.outbuf .. table.concat(lines)
  end
  if #self.outbuf == 0 then return end
  local last, err, partial = self.sock:send(self.outbuf)
  local sent = last or partial or 0
  if sent > 0 then self.last_send = socket.gettime() end
  self.outbuf = self.outbuf:sub(sent + 1)
  if not last and err ~= "timeout" then self:_lost("send failed: " .. tostring(err)) end
end

function Client:_read()
  while self.sock do
    local data, err, partial = self.sock:receive(8192)
    local chunk = data or partial
    if chunk and #chunk > 0 then
      self.inbuf = self.inbuf .. chunk
      self:_split_lines()
    end
    if err == "closed" then return self:_lost("server closed the connection") end
    if err then return end -- "timeout": nothing more to read this frame
  end
end

function Client:_split_lines()
  while self.sock do
    local nl = self.inbuf:find("\n", 1, true)
    if not nl then return end
    local line = self.inbuf:sub(1, nl - 1)
    self.inbuf = self.inbuf:sub(nl + 1)
    if line:find("%S") then
      local event, err = json.decode(line)
      if type(event) == "table" then
        self:_dispatch(event)
      else
        call(self.on_error, nil, "client_bad_json", tostring(err))
      end
    end
  end
end

function Client:_dispatch(ev)
  local id, kind = ev.id, ev.type
  local p = id ~= nil and self.pending[id] or nil
  if p and FINAL[p.kind] and FINAL[p.kind][kind] then self.pending[id] = nil end
  call(self.on_event, ev)
  if kind == "hello" and id == self.hello_id then
    self.state = "connected"
    self.backoff = self.reconnect_min
    call(self.on_connected, ev)
  elseif kind == "token" then
    call(self.on_token, id, ev.text)
  elseif kind == "sentence" then
    call(self.on_sentence, id, ev.index, ev.text)
  elseif kind == "done" then
    call(self.on_done, id, ev)
  elseif kind == "npcs" then
    call(self.on_npcs, ev.npcs, id)
  elseif kind == "error" then
    call(self.on_error, id, ev.code, ev.message)
    if ev.code == "unauthorized" then self.wanted = false end -- a wrong token will not get better
  elseif kind == "reloaded" or kind == "reload_error" then
    call(self.on_notification, ev)
  end
end

return lorekit
