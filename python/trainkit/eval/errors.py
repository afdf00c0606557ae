"""Errors the evaluator reports to a user: each message names the URI, task or field at fault."""


class EvalError(Exception):
    """An evaluation could not run; nothing was written."""


class CheckpointError(EvalError):
    """The checkpoint is missing, incomplete or not a causal language model."""


class TaskDataError(EvalError):
    """A task is unknown, or its data cannot be reached (e.g. the Hugging Face hub while offline)."""
