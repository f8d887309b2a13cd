"""`lorekit export`: adapter.gguf, merged model.gguf, Ollama Modelfile, export.json (and hf/), checked.

`run(out, cfg)` is what the CLI, `lorekit build` and the tests call; heavy imports happen inside it.
"""

from lorekit.export.config import ExportConfig
from lorekit.export.pipeline import ExportResult, check, run

__all__ = ["ExportConfig", "ExportResult", "check", "run"]
