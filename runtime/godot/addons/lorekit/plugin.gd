@tool
extends EditorPlugin
## Enabling the plugin registers the client as the autoload "LoreKit" (disabling removes it).

const AUTOLOAD_NAME := "LoreKit"
const CLIENT_PATH := "res://addons/lorekit/lorekit_client.gd"


func _enable_plugin() -> void:
	add_autoload_singleton(AUTOLOAD_NAME, CLIENT_PATH)


func _disable_plugin() -> void:
	remove_autoload_singleton(AUTOLOAD_NAME)
