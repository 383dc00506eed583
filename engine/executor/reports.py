"""The executor's pod reports on their way to the log: batched, in order, each caller told when its
own report is stored, and never dropped because the store was away for a while.

Policy (issue 9, "a pod report is never dropped"):

- **Retried until stored.** A batch that fails transiently (no connection, a timeout, no stream
  leader during an election, a 503) is retried with ``Backoff`` (0.1 s doubling to 5 s, jittered) for
  as long as the process lives. There is no attempt limit: an executor that gave up on a report would
  leave its pod unreported for good (nothing else re-reports it), which is how a rollout stalled when a
  leader election outlasted the old 5-attempt, ~3 s budget.
- **Only what failed is re-sent.** With a store that says which messages of a batch were acknowledged
  (``append_many_settled``), the next attempt carries only the others, so a retry that runs past the
  stream's 2-minute duplicate window cannot store an acknowledged report twice.
- **A refusal fails only its own callers.** A report the store refuses for good (``PermanentError``,
  ``InvalidInput``, or a conflict, which a report without expectations cannot legitimately meet) is
  logged at error level naming the events, and only those callers get the error; the rest of the batch
  is stored. A store that cannot say which message failed is asked again one report at a time.
- **Bounded memory, back-pressure.** At most ``max_pending`` reports wait in the queue (plus the one
  batch in flight); past that a caller's ``await`` waits for room, so during a long outage the drivers
  slow down instead of the executor's memory growing.
- **Visible.** Every retry logs a warning with the attempt and the error; once failing for longer than
  ``alarm_after`` seconds an error line says so (again every ``alarm_after`` seconds); recovery logs how
  long it took. ``pending``, ``failing_since``, ``retries``, ``stored`` and ``refused`` are there for
  metrics.
- **No unread task exception.** The drain task catches everything but cancellation (a bug of ours fails
  the batch in hand loudly and draining goes on); a done-callback logs anything that still ends it, and
  the next report starts a new one.

Order: batches are stored one after another, each fully before the next is taken, so reports keep the
order in which callers made them (a driver awaits each report of a pod before making the next).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import msgspec
import structlog

from engine.runtime.retry import Backoff
from engine.store.port import AppendResult, EventStore, SettlingStore
from events.envelope import Envelope, wrap
from events.errors import DsctlError, TransientError
from events.types import PodEvent

log = structlog.get_logger("dsctl.executor")


class _Report(msgspec.Struct):
    envelope: Envelope
    done: asyncio.Future[None]


def _read_outcome(future: asyncio.Future[None]) -> None:
    # a caller cancelled while its report was queued no longer awaits the future: read it here so that
    # an error set on it later is never reported as "Future exception was never retrieved"
    if not future.cancelled():
        future.exception()


def _retryable(outcome: AppendResult | BaseException) -> bool:
    """Transient failures, and failures we cannot classify (nats-py internals during a reconnect):
    giving up on those would drop a report; retrying a real bug only repeats a loud log line."""
    return isinstance(outcome, BaseException) and (
        isinstance(outcome, TransientError) or not isinstance(outcome, DsctlError)
    )


class BatchingAppender:
    """Appends pod reports in batches (one ``append_many`` per burst) while keeping their order.

    A simulated fleet reports tens of thousands of pod events in a burst; one request-reply per report
    would cap it at the round-trip rate. Each caller still waits for its own report to be stored.
    """

    def __init__(
        self,
        store: EventStore,
        source: str,
        *,
        max_batch: int = 512,
        max_pending: int = 10_000,
        backoff: Backoff | None = None,
        alarm_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.source = source
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.alarm_after = alarm_after
        self._backoff = backoff or Backoff(initial=0.1, cap=5.0)
        self._clock = clock
        self._queue: asyncio.Queue[_Report] = asyncio.Queue(maxsize=max_pending)
        self._in_flight: list[_Report] = []
        self._task: asyncio.Task[None] | None = None
        self._room = asyncio.Event()
        self._closed = False
        #: when (``clock``) the current run of failed attempts began; None while appends succeed
        self.failing_since: float | None = None
        self._alarmed_at = 0.0
        self.retries = 0
        self.stored = 0
        self.refused = 0

    @property
    def pending(self) -> int:
        """Reports accepted from callers and not yet stored (queued plus the batch in flight)."""
        return self._queue.qsize() + len(self._in_flight)

    async def __call__(self, event: PodEvent, *, event_id: str, causation_id: str) -> None:
        """Return once the report is stored. Raises only on cancellation, on a permanent refusal of this
        report, or when the appender was closed before storing it."""
        if self._closed:
            raise TransientError(f"the report appender of {self.source} is closed")
        # wrapped now: occurred_at is when the driver saw it, not when a batch happened to leave
        envelope = wrap(
            event, id=event_id, occurred_at=datetime.now(UTC), source=self.source, causation_id=causation_id
        )
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.add_done_callback(_read_outcome)
        self._ensure_draining()
        report = _Report(envelope, done)
        # back-pressure: while the queue is full the caller waits for room, or for close() (a plain
        # ``Queue.put`` would wait forever once nothing drains). Order between callers is not kept
        # here, and need not be: a driver awaits a pod's report before making its next one
        while True:
            if self._closed:
                raise TransientError(f"the report appender of {self.source} is closed")
            try:
                self._queue.put_nowait(report)
                break
            except asyncio.QueueFull:
                self._room.clear()
                await self._room.wait()
        await done

    def _ensure_draining(self) -> None:
        if not self._closed and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self._drain())
            self._task.add_done_callback(self._drain_ended)

    def _drain_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        err = task.exception()
        if err is not None:  # _drain catches everything; reaching this is a bug, said loudly
            log.error("executor.report_drain_died", source=self.source, exc_info=err)

    async def _drain(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._room.set()
            self._in_flight = batch
            try:
                await self._store(batch)
            except Exception as err:  # a bug of ours: fail this batch loudly, keep serving the others
                log.error("executor.report_batch_failed", source=self.source, events=len(batch), exc_info=err)
                for report in batch:
                    if not report.done.done():
                        report.done.set_exception(err)
            finally:
                self._in_flight = []

    async def _store(self, batch: list[_Report]) -> None:
        """Until every report of ``batch`` is stored or refused (no attempt limit; see the module doc)."""
        # a caller that was cancelled meanwhile still gets its report stored: it states what happened
        todo = list(batch)
        attempt = 0
        while todo:
            attempt += 1
            outcomes = await self._attempt([r.envelope for r in todo])
            retry: list[_Report] = []
            refused: list[tuple[_Report, BaseException]] = []
            last_error: BaseException | None = None
            for report, outcome in zip(todo, outcomes, strict=True):
                if isinstance(outcome, AppendResult):
                    self.stored += 1
                    if not report.done.done():
                        report.done.set_result(None)
                elif _retryable(outcome):
                    retry.append(report)
                    last_error = outcome
                else:
                    refused.append((report, outcome))
            if refused:
                self._refuse(refused)
            if not retry:
                self._recovered(attempt)
                return
            self._in_flight = todo = retry  # what ``pending`` counts: the stored ones are done
            await self._pause(attempt, len(retry), last_error)

    async def _attempt(self, envelopes: list[Envelope]) -> Sequence[AppendResult | BaseException]:
        """One try at storing ``envelopes``: each one's result or error, never raising (bar cancel)."""
        if isinstance(self.store, SettlingStore):
            try:
                return await self.store.append_many_settled(envelopes)
            except Exception as err:  # it should not raise; if it does, the whole batch is retried
                return [err] * len(envelopes)
        try:
            return await self.store.append_many(envelopes)
        except Exception as err:
            if _retryable(err) or len(envelopes) == 1:
                return [err] * len(envelopes)
        # refused, and the store does not say which one: find it by asking one report at a time
        outcomes: list[AppendResult | BaseException] = []
        for envelope in envelopes:
            try:
                outcomes.append(await self.store.append(envelope))
            except Exception as err:
                outcomes.append(err)
        return outcomes

    def _refuse(self, refused: list[tuple[_Report, BaseException]]) -> None:
        self.refused += len(refused)
        log.error(
            "executor.report_refused",
            source=self.source,
            events=[f"{r.envelope.type} {r.envelope.id}" for r, _ in refused[:20]],
            count=len(refused),
            error=f"{type(refused[0][1]).__name__}: {refused[0][1]}",
        )
        for report, err in refused:
            if not report.done.done():
                report.done.set_exception(err)

    async def _pause(self, attempt: int, waiting: int, error: BaseException | None) -> None:
        now = self._clock()
        if self.failing_since is None:
            self.failing_since = now
            self._alarmed_at = now
        self.retries += 1
        delay = self._backoff.delay(attempt)
        failing_for = now - self.failing_since
        log.warning(
            "executor.report_retry",
            source=self.source,
            attempt=attempt,
            waiting=waiting,
            pending=self.pending,
            failing_for=round(failing_for, 1),
            retry_in=round(delay, 2),
            error=f"{type(error).__name__}: {error}" if error is not None else "",
        )
        if now - self._alarmed_at >= self.alarm_after:
            self._alarmed_at = now
            log.error(
                "executor.reports_stalled",
                source=self.source,
                failing_for=round(failing_for, 1),
                pending=self.pending,
                attempts=attempt,
                error=str(error),
            )
        await asyncio.sleep(delay)

    def _recovered(self, attempts: int) -> None:
        if self.failing_since is None:
            return
        log.info(
            "executor.reports_recovered",
            source=self.source,
            attempts=attempts,
            seconds=round(self._clock() - self.failing_since, 1),
        )
        self.failing_since = None

    async def close(self) -> None:
        """Stop draining. Callers still waiting get a ``TransientError`` (their report may or may not
        have been stored; a restarted executor re-reports what it knows)."""
        self._closed = True
        # taken before cancelling: the drain forgets its batch as the cancellation unwinds it
        waiting = list(self._in_flight)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):  # an exception: logged already
                await self._task
            self._task = None
        closed = TransientError(f"the report appender of {self.source} closed before the report was stored")
        while not self._queue.empty():
            waiting.append(self._queue.get_nowait())
        self._in_flight = []
        self._room.set()  # callers waiting for room see the appender closed
        for report in waiting:
            if not report.done.done():
                report.done.set_exception(closed)
