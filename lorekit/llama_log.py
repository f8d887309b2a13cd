"""llama.cpp's own log, routed into Python logging (logger "llama.cpp").

llama-cpp-python 0.3.36 maps ggml's log levels with an older numbering (ggml now has NONE, DEBUG,
INFO, WARN, ERROR, CONT = 0..5), so every llama.cpp *warning* reaches stderr as an error even with
`verbose=False`: a LoRA load prints one "cannot use buft 'CPU_REPACK', fallback to CPU" line per
tensor into the middle of `lorekit build`. Here warnings go to the debug log, errors stay visible.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger("llama.cpp")

# ggml_log_level -> Python level; CONT (5) continues the previous message at its level.
LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.DEBUG, 4: logging.WARNING}
_state = {"callback": None, "last": logging.DEBUG}


def route() -> None:
    """Install the callback once per process (llama.cpp keeps one global log callback)."""
    if _state["callback"] is not None:
        return
    import llama_cpp

    @llama_cpp.llama_log_callback
    def callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        py_level = _state["last"] if level == 5 else LEVELS.get(level, logging.DEBUG)
        _state["last"] = py_level
        if log.isEnabledFor(py_level):
            message = text.decode("utf-8", errors="replace").rstrip("\n")
            if message:
                log.log(py_level, "%s", message)

    _state["callback"] = callback  # kept referenced: llama.cpp calls it for the life of the process
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
