"""Evaluation: format/label accuracy across instruction phrasings, translation metrics, loss, first-token
state space and hidden-state alignment (`delia eval`). Torch-free at import; `run_eval` loads models."""

from delia.evaluation.config import EvalConfig
from delia.evaluation.parsing import ParseResult, check_keys, extract_label, object_closed, parse_output

__all__ = ["EvalConfig", "ParseResult", "check_keys", "extract_label", "object_closed", "parse_output", "run_eval"]


def __getattr__(name: str):
    if name == "run_eval":  # pulls in the stage; import on first use
        from delia.evaluation.run import run_eval

        return run_eval
    raise AttributeError(name)
