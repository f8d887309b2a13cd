-- Reads one JSON document on stdin, decodes it with the Lua client's codec and writes it back
-- encoded (tests/test_clients_codecs.py compares the result with Python's json module).
local here = arg[0]:match("^(.*)[/\\]") or "."
package.path = here .. "/../../lua/?.lua;" .. package.path
local json = require("lorekit").json
local value, err = json.decode(io.read("*a"))
if err then
  io.stderr:write(err, "\n")
  os.exit(2)
end
io.write(json.encode(value), "\n")
