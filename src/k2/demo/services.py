"""The running parts the demo narrates: Kafka, an ingest process and the API, in this process.

Ingest and the API run in threads here (as ``k2 ingest`` and ``k2 api`` would in processes) so
the story can read their reports and stop them cleanly; the API is served by uvicorn on a real
port and asked over HTTP, as any client would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from k2.api.app import create_app
from k2.api.server import uvicorn_config
from k2.broker import LocalBroker, ensure_k2_topics
from k2.config import Settings
from k2.errors import K2Error
from k2.ingest import IngestApp, IngestReport
from k2.logs import get_logger
from k2.query.engine import open_engine

__all__ = ["ApiServer", "BackgroundIngest", "DemoTimeout", "Kafka", "wait_until"]


_log = get_logger("demo")


class DemoTimeout(K2Error):
    """Something the demo waits for did not happen in time."""


def wait_until(what: str, ready: Callable[[], bool], timeout: float, every: float = 0.05) -> float:
    """Poll ``ready`` until true; the wall time (epoch s) it first was.

    Raises:
        DemoTimeout: not ready after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return time.time()
        if time.monotonic() > deadline:
            raise DemoTimeout(f"{what}: not within {timeout:g} s")
        time.sleep(every)


class Kafka:
    """The demo's broker: a ``LocalBroker`` it starts (and stops), or a cluster it was given."""

    def __init__(self, settings: Settings, external: bool) -> None:
        self.settings = settings
        self.external = external
        self.local = None if external else LocalBroker(settings.broker, settings.kafka)
        self.pid: int | None = None

    @property
    def bootstrap(self) -> str:
        return self.settings.kafka.bootstrap_servers

    def start(self) -> None:
        if self.local is None:
            kafka = self.settings.kafka
            ensure_k2_topics(kafka.bootstrap_servers, kafka.topics, kafka.partitions)
        else:
            self.pid = self.local.start().pid

    def stop(self) -> None:
        if self.local is None:
            from k2.broker import delete_topics

            try:
                delete_topics(self.bootstrap, self.settings.kafka.topics.all(), timeout=15)
            except K2Error as e:  # a shared cluster keeps a few demo topics; the next run uses new names
                _log.warning("demo_topics_left", bootstrap=self.bootstrap, error=str(e))
        else:
            self.local.stop()


class BackgroundIngest:
    """An ``IngestApp`` running in a thread; ``stop`` commits what it holds and returns its report."""

    def __init__(self, settings: Settings, writer_id: str, **run: Any) -> None:
        self.app = IngestApp(settings, writer_id=writer_id)
        self._run_kwargs = run
        self.result: IngestReport | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"demo-{writer_id}", daemon=True)

    def _run(self) -> None:
        try:
            self.result = self.app.run(**self._run_kwargs)
        except BaseException as e:  # handed to the story by ``raise_if_failed``/``join``
            self.error = e

    def start(self) -> BackgroundIngest:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def join(self, timeout: float) -> IngestReport:
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise DemoTimeout(f"ingest did not finish within {timeout:g} s")
        self.raise_if_failed()
        assert self.result is not None
        return self.result

    def stop(self, timeout: float = 120.0) -> IngestReport:
        self.app.stop()
        return self.join(timeout)


class ApiServer:
    """``k2 api`` on ``settings.api.host:port`` in a thread, with an HTTP client for it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.engine = open_engine(settings)
        self._server = uvicorn.Server(uvicorn_config(create_app(self.engine, settings.api), settings.api))
        self._thread = threading.Thread(target=self._server.run, name="demo-api", daemon=True)
        self.url = f"http://{settings.api.host}:{settings.api.port}"
        self.client = httpx.Client(base_url=self.url, timeout=30.0)

    def __enter__(self) -> ApiServer:
        self._thread.start()
        wait_until("the API to start", lambda: self._server.started, timeout=30.0)
        return self

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = self.client.get(path, params={k: v for k, v in params.items() if v is not None})
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        r = self.client.post(path, json=body)
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.client.close()
        self._server.should_exit = True
        self._thread.join(timeout=30)
