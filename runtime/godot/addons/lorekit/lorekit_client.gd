class_name LoreKitClient
extends Node
## Client for the LoreKit game protocol (runtime/PROTOCOL.md: newline-delimited JSON over TCP).
##
## Add it as an autoload (enabling the plugin does that, under the name "LoreKit") or as a child
## node. It never blocks: the socket is polled in _process, and replies arrive as signals.
## It reconnects on its own when the server restarts.
##
##     LoreKit.sentence_received.connect(func(id, index, text): $Subtitle.text = text)
##     var turn_id := LoreKit.say("mara-vell", "Who leads the Ash Guild?")

## The server answered the handshake; [param hello] is its hello event (protocol, server, model).
signal connected(hello: Dictionary)
## The connection dropped (requests in flight end with error_received "disconnected").
signal disconnected(reason: String)
## Answer to list_npcs(): an Array of {"id", "name", "greeting", "farewell"} Dictionaries
## (greeting and farewell are "" when the NPC has none).
signal npcs_listed(request_id: String, npcs: Array)
## A piece of the reply, as soon as it is generated.
signal token_received(turn_id: String, text: String)
## A whole sentence of the reply: start speech or a subtitle with it.
signal sentence_received(turn_id: String, index: int, text: String)
## The turn ended: reply.text is the whole reply; reply.finish_reason is "stop", "length"
## or "cancelled".
signal reply_finished(turn_id: String, reply: Dictionary)
## A request failed ([param request_id] is "" for connection-level errors). Act on [param code].
signal error_received(request_id: String, code: String, message: String)
## The server reloaded lore or model ("reloaded"), or a reload failed ("reload_error").
signal notification_received(event: Dictionary)
## Every event from the server, raw (pong, status, reset, future event types).
signal event_received(event: Dictionary)

enum State { IDLE, CONNECTING, HANDSHAKE, CONNECTED, WAITING, CLOSED }

const PROTOCOL := 1
const VERSION := "0.1.0"
const NEWLINE := 10
const FINAL_EVENTS := {
	"turn": ["done", "error"],
	"list_npcs": ["npcs", "error"],
	"ping": ["pong", "error"],
	"status": ["status", "error"],
	"reset": ["reset", "error"],
}

## Server address; Project Settings "lorekit/host", "lorekit/port", "lorekit/token" override these.
@export var host := "127.0.0.1"
@export var port := 7861
## Only when the server was started with --token.
@export var token := ""
## History is kept per (NPC, session): use a save-game id.
@export var session := "default"
@export var auto_connect := true
@export var reconnect := true
@export var reconnect_min_s := 0.5
@export var reconnect_max_s := 5.0
## Ping after this many idle seconds: the server closes connections silent for 300 s (0: never).
@export var keepalive_s := 60.0

var state: State = State.IDLE

var _peer: StreamPeerTCP
var _pending := {}
var _queue: Array = []
var _inbuf := PackedByteArray()
var _next_id := 0
var _hello_id := ""
var _wanted := false
var _backoff := 0.5
var _retry_in := 0.0
var _idle_s := 0.0


func _ready() -> void:
	host = ProjectSettings.get_setting("lorekit/host", host)
	port = ProjectSettings.get_setting("lorekit/port", port)
	token = ProjectSettings.get_setting("lorekit/token", token)
	_backoff = reconnect_min_s
	if auto_connect:
		connect_to_server()


func _process(delta: float) -> void:
	poll(delta)


func _exit_tree() -> void:
	close()


## Start connecting; returns at once. [signal connected] fires when the server answers.
func connect_to_server() -> void:
	_wanted = true
	if state in [State.IDLE, State.WAITING, State.CLOSED]:
		_open()


func is_connected_to_server() -> bool:
	return state == State.CONNECTED


## Ask for the NPCs; the answer comes with [signal npcs_listed]. Returns the request id.
func list_npcs() -> String:
	return _request({"type": "list_npcs"})


## The player says [param text] to [param npc]. Options: "session", "state" (Dictionary of game
## state), "max_tokens", "temperature", "stream". Returns the turn id every signal carries.
func say(npc: String, text: String, options := {}) -> String:
	var req := {
		"type": "turn", "npc": npc, "text": text, "session": options.get("session", session)
	}
	for key in ["state", "max_tokens", "temperature", "stream"]:
		if options.has(key):
			req[key] = options[key]
	return _request(req)


## The line the player has typed so far: send it on each pause or word, with the options the turn
## will carry ("session", "state"). The server processes it ahead, so the reply starts sooner. No
## answer comes; bad input gets [signal error_received] with the returned id.
func typing(npc: String, text: String, options := {}) -> String:
	var req := {
		"type": "typing", "npc": npc, "text": text, "session": options.get("session", session)
	}
	if options.has("state"):
		req["state"] = options["state"]
	return _request(req, false)


## Stop a turn: it ends with [signal reply_finished] and finish_reason "cancelled".
func cancel(turn_id: String) -> void:
	_queue.append(["", _encode({"type": "cancel", "id": turn_id})])
	_flush()


## Forget the conversation with [param npc] ("*" for every NPC) in [param for_session].
func reset_conversation(npc: String, for_session := "") -> String:
	var chosen := for_session if for_session != "" else session
	return _request({"type": "reset", "npc": npc, "session": chosen})


func ping() -> String:
	return _request({"type": "ping"})


func request_status() -> String:
	return _request({"type": "status"})


## Close for good (no reconnect).
func close() -> void:
	_wanted = false
	if _peer:
		_peer.disconnect_from_host()
	_peer = null
	_fail_sent("client closed")
	state = State.CLOSED


## Drive the connection; _process calls it. Call it yourself when the node does not process.
func poll(delta: float) -> void:
	if state == State.WAITING:
		_retry_in -= delta
		if _retry_in <= 0.0:
			_open()
		return
	if _peer == null or state in [State.IDLE, State.CLOSED]:
		return
	_peer.poll()
	var status := _peer.get_status()
	if status == StreamPeerTCP.STATUS_CONNECTED:
		if state == State.CONNECTING:
			_start_handshake()
		_idle_s += delta
		if state == State.CONNECTED and keepalive_s > 0.0 and _idle_s >= keepalive_s:
			ping()
		_read()
	elif status != StreamPeerTCP.STATUS_CONNECTING:
		_lost("server closed the connection" if state != State.CONNECTING else "cannot connect")


func _open() -> void:
	_peer = StreamPeerTCP.new()
	_inbuf = PackedByteArray()
	if _peer.connect_to_host(host, port) != OK:
		_lost("cannot connect to %s:%d" % [host, port])
		return
	state = State.CONNECTING


func _start_handshake() -> void:
	_peer.set_no_delay(true)
	state = State.HANDSHAKE
	_hello_id = _new_id()
	var hello := {
		"type": "hello", "id": _hello_id, "version": PROTOCOL, "client": "lorekit-godot/" + VERSION
	}
	if token != "":
		hello["token"] = token
	# hello always goes first: it carries the token when the server has one.
	_peer.put_data(_encode(hello))


func _new_id() -> String:
	_next_id += 1
	return "gd-%d" % _next_id


func _encode(msg: Dictionary) -> PackedByteArray:
	return (JSON.stringify(msg) + "\n").to_utf8_buffer()


# Requests wait in _queue until the connection is up, then go out in order. One that gets no answer
# (typing) is not pending: nothing ends it, so a drop reports nothing for it.
func _request(req: Dictionary, answered := true) -> String:
	var id := _new_id()
	req["id"] = id
	if answered:
		_pending[id] = {"kind": req["type"], "sent": false}
	_queue.append([id, _encode(req)])
	_flush()
	return id


func _flush() -> void:
	if state != State.CONNECTED or _peer == null:
		return
	while not _queue.is_empty():
		var item: Array = _queue.pop_front()
		if item[0] != "" and _pending.has(item[0]):
			_pending[item[0]]["sent"] = true
		if _peer.put_data(item[1]) != OK:
			_lost("send failed")
			return
		_idle_s = 0.0


func _read() -> void:
	var available := _peer.get_available_bytes()
	if available <= 0:
		return
	var result: Array = _peer.get_partial_data(available)
	if result[0] != OK:
		_lost("read failed")
		return
	_inbuf.append_array(result[1])
	var nl := _inbuf.find(NEWLINE)
	while nl >= 0 and _peer != null:
		# Decode whole lines only, so a multi-byte character split across reads stays intact.
		var line := _inbuf.slice(0, nl).get_string_from_utf8()
		_inbuf = _inbuf.slice(nl + 1)
		if line.strip_edges() != "":
			var ev = JSON.parse_string(line)
			if typeof(ev) == TYPE_DICTIONARY:
				_dispatch(ev)
			else:
				error_received.emit("", "client_bad_json", "not a JSON object: " + line.left(80))
		nl = _inbuf.find(NEWLINE)


func _dispatch(ev: Dictionary) -> void:
	var kind: String = str(ev.get("type", ""))
	var raw_id = ev.get("id")
	var id: String = "" if raw_id == null else str(raw_id)
	if _pending.has(id) and kind in FINAL_EVENTS.get(_pending[id]["kind"], []):
		_pending.erase(id)
	event_received.emit(ev)
	match kind:
		"hello":
			if id == _hello_id:
				state = State.CONNECTED
				_backoff = reconnect_min_s
				connected.emit(ev)
				_flush()
		"token":
			token_received.emit(id, str(ev.get("text", "")))
		"sentence":
			sentence_received.emit(id, int(ev.get("index", 0)), str(ev.get("text", "")))
		"done":
			reply_finished.emit(id, ev)
		"npcs":
			npcs_listed.emit(id, ev.get("npcs", []))
		"error":
			var code := str(ev.get("code", ""))
			if code == "unauthorized":
				_wanted = false  # a wrong token will not get better
			error_received.emit(id, code, str(ev.get("message", "")))
		"reloaded", "reload_error":
			notification_received.emit(ev)


func _fail_sent(reason: String) -> void:
	var failed: Array = []
	for id in _pending:
		if _pending[id]["sent"]:
			failed.append(id)
	failed.sort()
	for id in failed:
		_pending.erase(id)
		error_received.emit(id, "disconnected", reason)


func _lost(reason: String) -> void:
	var was_connected := state in [State.HANDSHAKE, State.CONNECTED]
	if _peer:
		_peer.disconnect_from_host()
	_peer = null
	_fail_sent(reason)
	if was_connected:
		disconnected.emit(reason)
	if reconnect and _wanted:
		state = State.WAITING
		_retry_in = _backoff
		_backoff = minf(_backoff * 2.0, reconnect_max_s)
	else:
		state = State.CLOSED
