"""vLLM plugin (entry point `vllm.general_plugins`): no traceback for an engine's normal
shutdown.

When a Ray Data actor pool is done, ray.data.llm shuts its engine down; vLLM's client stops
the engine process while AsyncLLM's output handler still awaits it, and logs
"AsyncLLM output_handler failed" with an EngineDeadError traceback, every time. Only that
record, and only after this process's own "[shutdown] MPClient: start", is dropped: an
engine that dies while it works still logs its traceback.
"""

from __future__ import annotations

import logging

SHUTDOWN_STARTS = "[shutdown] MPClient: start"
NOISE = "AsyncLLM output_handler failed"


class AfterShutdown(logging.Filter):
    def __init__(self) -> None:
        super().__init__()
        self.shutting_down = False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith(SHUTDOWN_STARTS):
            self.shutting_down = True
        return not (self.shutting_down and msg.startswith(NOISE))


def register() -> None:
    """Called by vLLM in each of its processes."""
    f = AfterShutdown()
    for name in ("vllm.v1.engine.core_client", "vllm.v1.engine.async_llm"):
        logging.getLogger(name).addFilter(f)
