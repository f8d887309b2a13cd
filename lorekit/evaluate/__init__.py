"""Evaluation: compare the base model with the tuned model on the build's held-out questions.

`run(out, cfg)` writes `OUT/eval/report.json` and `OUT/eval/report.html`. Importing this package
does not import llama-cpp-python or torch; they load when a model is.
"""

from lorekit.evaluate.config import EvalConfig
from lorekit.evaluate.runner import EvalResult, run

__all__ = ["EvalConfig", "EvalResult", "run"]
