"""Our services' own log lines on stderr, for processes that no service entry point configures: Triton's python
backend stub (its stderr is tritonserver's log) and the benches' child processes."""

from __future__ import annotations

import logging
import sys


def services_log_to_stderr(line_format: str) -> None:
    """INFO and above of every `services.*` logger on stderr as `line_format`; a second call adds nothing."""
    logger = logging.getLogger("services")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(line_format))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
