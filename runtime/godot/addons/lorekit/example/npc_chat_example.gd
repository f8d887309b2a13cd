extends Control
## Example: attach to a Control node in any scene and run it (with `lorekit serve` running).
## Builds its own small UI: an NPC picker, a line to type, the reply streaming in sentence by
## sentence, and a Stop button that cancels the turn. Uses the "LoreKit" autoload when the plugin
## is enabled, else a LoreKitClient of its own.

var client: LoreKitClient
var current_turn := ""
var npc_picker := OptionButton.new()
var input := LineEdit.new()
var reply_label := RichTextLabel.new()
var stop_button := Button.new()


func _ready() -> void:
	_build_ui()
	client = get_node_or_null("/root/LoreKit") as LoreKitClient
	if client == null:
		client = LoreKitClient.new()
		add_child(client)
	client.connected.connect(_on_connected)
	client.disconnected.connect(func(reason): _show("[i](connection lost: %s)[/i]" % reason))
	client.npcs_listed.connect(_on_npcs_listed)
	client.token_received.connect(_on_token)
	client.sentence_received.connect(_on_sentence)
	client.reply_finished.connect(_on_reply_finished)
	client.error_received.connect(_on_error)
	if client.is_connected_to_server():
		client.list_npcs()


func _build_ui() -> void:
	var box := VBoxContainer.new()
	box.set_anchors_preset(Control.PRESET_FULL_RECT)
	add_child(box)
	box.add_child(npc_picker)
	reply_label.bbcode_enabled = true
	reply_label.size_flags_vertical = Control.SIZE_EXPAND_FILL
	box.add_child(reply_label)
	input.placeholder_text = "Say something and press Enter"
	input.text_submitted.connect(_on_submitted)
	input.text_changed.connect(_on_text_changed)
	box.add_child(input)
	stop_button.text = "Stop"
	stop_button.disabled = true
	stop_button.pressed.connect(func(): client.cancel(current_turn))
	box.add_child(stop_button)


func _on_connected(_hello: Dictionary) -> void:
	client.list_npcs()  # again after every reconnect: the lore may have changed


func _on_npcs_listed(_request_id: String, npcs: Array) -> void:
	npc_picker.clear()
	for npc in npcs:
		npc_picker.add_item(npc["name"])
		npc_picker.set_item_metadata(npc_picker.item_count - 1, npc["id"])
		if npc["greeting"] != "":
			_show("[b]%s:[/b] %s" % [npc["name"], npc["greeting"]])


# Each time a word ends, the line so far goes ahead (with the state the turn will carry): the reply
# then starts sooner when Enter is pressed.
func _on_text_changed(text: String) -> void:
	if text.ends_with(" ") and text.strip_edges() != "" and npc_picker.selected >= 0:
		client.typing(npc_picker.get_item_metadata(npc_picker.selected), text, {"state": _game_state()})


func _on_submitted(text: String) -> void:
	if text.strip_edges() == "" or npc_picker.selected < 0 or current_turn != "":
		return
	input.clear()
	_show("[b]You:[/b] " + text)
	var npc_id: String = npc_picker.get_item_metadata(npc_picker.selected)
	current_turn = client.say(npc_id, text, {"state": _game_state()})
	stop_button.disabled = false
	_show("[b]%s:[/b] " % npc_picker.get_item_text(npc_picker.selected))


func _on_token(turn_id: String, text: String) -> void:
	if turn_id == current_turn:
		reply_label.add_text(text)  # plain text (no BBCode); tokens for the eye, sentences for speech


func _on_sentence(turn_id: String, index: int, text: String) -> void:
	if turn_id == current_turn:
		print("sentence %d ready for speech synthesis: %s" % [index, text])


func _on_reply_finished(turn_id: String, reply: Dictionary) -> void:
	if turn_id != current_turn:
		return
	if reply["finish_reason"] == "cancelled":
		reply_label.append_text(" [i](stopped)[/i]")
	current_turn = ""
	stop_button.disabled = true


func _on_error(request_id: String, code: String, message: String) -> void:
	_show("[color=red]%s: %s[/color]" % [code, message])
	if request_id == current_turn:
		current_turn = ""
		stop_button.disabled = true


func _game_state() -> Dictionary:
	return {"location": str(get_tree().current_scene.name), "time": "dusk"}


func _show(line: String) -> void:
	reply_label.append_text("\n" + line)
