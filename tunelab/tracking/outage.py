"""MLflow writes that never stop training: while the server does not answer, each write waits
in a queue, in order, and is replayed once it answers; any other failure is reported and
skipped."""

from __future__ import annotations

import functools
import logging
import os
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any, Protocol

logger = logging.getLogger(__name__)


def unreachable(error: BaseException) -> bool:
    """A server that does not answer (refused, reset, timed out), not a refused request."""
    text = str(error)
    return isinstance(error, (ConnectionError, TimeoutError)) or any(
        marker in text for marker in ("Max retries exceeded", "Connection refused", "timed out")
    )


class WriteQueue:
    """Runs writes in order; keeps the ones an unreachable server did not take.

    `on_outage` is called when the server is found unreachable: a write cut off mid-way may
    have been stored before the answer was lost, so the caller checks what it kept.
    """

    RETRY_S = 5.0  # how often an unreachable server is asked again

    def __init__(self, on_outage: Callable[[], None], background: bool = False) -> None:
        self.on_outage = on_outage
        self.unlogged: list[str] = []  # what MLflow refused, reported at the end
        self._queue: deque[tuple[str, Callable[[], None]]] = deque()
        self._last_probe = 0.0
        self._busy = False  # inside a write or a replay
        # background: writes run in order on one thread of their own, so the caller (Tune's
        # loop) does not wait for MLflow; `wait` blocks until they have run
        self.background = background
        self._jobs: queue.Queue[tuple[str, Callable[[], None]]] = queue.Queue()
        self._worker: threading.Thread | None = None

    def attempt(self, name: str, call: Callable[[], None]) -> None:
        """Run `call` (on the writer thread in the background), after what waits before it,
        or queue it if the server is down."""
        if self.background and threading.current_thread() is not self._worker:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="mlflow", daemon=True)
                self._worker.start()
            self._jobs.put((name, call))
            return
        self._attempt_now(name, call)

    def wait(self) -> None:
        """Until every write handed to the writer thread has run (or been queued by an outage)."""
        self._jobs.join()

    def _work(self) -> None:
        while True:
            name, call = self._jobs.get()
            try:
                self._attempt_now(name, call)
            except Exception as error:  # on_outage itself failed: report, keep the thread
                self._skip(name, error)
            finally:
                self._jobs.task_done()

    def _attempt_now(self, name: str, call: Callable[[], None]) -> None:
        if self._busy:  # called by another write: an unreachable server queues the outer one
            try:
                call()
            except Exception as error:
                if unreachable(error):
                    raise
                self._skip(name, error)
            return
        if self._queue and not self.flush():
            self._queue.append((name, call))  # keep the order: runs exist before their epochs
            return
        self._busy = True
        try:
            call()
        except Exception as error:
            if not unreachable(error):
                self._skip(name, error)
                return
            logger.warning(
                "MLflow: %s does not answer (%s); trials go on, and what they report is kept "
                "until it answers again",
                os.environ.get("MLFLOW_TRACKING_URI"),
                error,
            )
            self._queue.append((name, call))
            self._last_probe = time.monotonic()
            self.on_outage()
        finally:
            self._busy = False

    def flush(self, force: bool = False) -> bool:
        """Replay the queue if the server answers again (asked at most every RETRY_S)."""
        if not force and time.monotonic() - self._last_probe < self.RETRY_S:
            return False
        self._last_probe = time.monotonic()
        self._busy = True
        try:
            while self._queue:
                name, call = self._queue[0]
                try:
                    call()
                except Exception as error:
                    if unreachable(error):
                        return False
                    self._skip(name, error)
                self._queue.popleft()
        finally:
            self._busy = False
        logger.warning("MLflow: the server answers again; everything kept has been logged")
        return True

    def drain(self, wait_s: float) -> None:
        """At the sweep's end: let the writer thread finish, wait up to `wait_s` for the server,
        then report what is missing."""
        self.wait()
        if self._queue:
            logger.warning(
                "MLflow: waiting up to %.0f s for the server to log what trials reported", wait_s
            )
        deadline = time.monotonic() + wait_s
        while self._queue and not self.flush(force=True) and time.monotonic() < deadline:
            time.sleep(self.RETRY_S)
        if self._queue:
            waiting = Counter(name for name, _ in self._queue)
            self.unlogged += [f"{n} x {name}: server unreachable" for name, n in waiting.items()]
        if self.unlogged:
            logger.warning(
                "MLflow: %d calls failed, their values are missing from MLflow (results.parquet "
                "has every trial):\n  %s",
                len(self.unlogged),
                "\n  ".join(self.unlogged),
            )

    def _skip(self, name: str, error: Exception) -> None:
        self.unlogged.append(f"{name}: {type(error).__name__}: {error}")
        logger.warning("MLflow: %s not logged (%s); training goes on", name, error)


class _HasWrites(Protocol):
    writes: WriteQueue


def never_fails(method: Callable[..., None]) -> Callable[..., None]:
    """A method whose MLflow writes go through its object's `writes` queue (see WriteQueue)."""

    @functools.wraps(method)
    def guarded(self: _HasWrites, *args: Any, **kwargs: Any) -> None:
        self.writes.attempt(method.__name__, functools.partial(method, self, *args, **kwargs))

    return guarded
