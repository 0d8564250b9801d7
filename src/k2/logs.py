"""structlog setup: JSON lines for machines, colour for a terminal. Called once at the edge."""

from __future__ import annotations

import logging
import sys

import structlog

from k2.config import LogSettings

__all__ = ["configure_logging", "get_logger"]


def configure_logging(cfg: LogSettings) -> None:
    level = logging.getLevelName(cfg.level.upper())
    use_json = cfg.format == "json" or (cfg.format == "auto" and not sys.stderr.isatty())
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        # Plain tracebacks: the rich default prints every frame's local variables, which is slow
        # and would put secrets (an API key in a request) into the log.
        else structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            level if isinstance(level, int) else logging.INFO
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(component: str, **context: object) -> structlog.typing.FilteringBoundLogger:
    # A lazy proxy: modules may call this at import time, before configure_logging() runs.
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(component=component, **context)
    return logger
