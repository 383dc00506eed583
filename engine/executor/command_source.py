"""Where executors get their commands: a durable pull consumer with explicit acks on ``DSE_COMMANDS``.

One durable per served scope: ``exec-<node>`` filtering ``dse.cmd.<node>`` for a node executor, or
``exec-fleet`` filtering ``dse.cmd.>`` for a simulated fleet (one consumer for 5,000 nodes instead of
5,000: the server refuses more than its consumer limit and durables cost memory; see the architecture
notes). The consumer is created or updated explicitly (nats-py's ``pull_subscribe`` ignores a changed
config), then bound. A fetch that times out means "nothing yet", not an error; a fetch that fails
because the server went away is retried with a short backoff, re-creating the consumer if it is gone.

An optional ``gate`` (the executor's node lease) pauses fetching while it is clear: an executor that
cannot confirm it still holds its node must not take that node's commands, which another executor may
be serving by then. Messages already fetched are still settled.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import structlog
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from engine.executor.executor import Delivery
from engine.store.streams import COMMANDS_STREAM
from events import codec
from events.errors import MalformedEvent
from events.subjects import COMMAND_SUBJECTS, command_subject, token

log = structlog.get_logger("dsctl.commands")


def durable_name(node: str | None) -> str:
    return "exec-fleet" if node is None else f"exec-{token(node).replace('*', '_')}"


class JetStreamCommandSource:
    def __init__(
        self,
        nc: Client,
        *,
        node: str | None = None,
        stream: str = COMMANDS_STREAM,
        batch: int = 256,
        ack_wait: float = 30.0,
        max_deliver: int = 20,
        fetch_timeout: float = 1.0,
        gate: asyncio.Event | None = None,
    ) -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self.node = node
        self.stream = stream
        self.batch = batch
        self.durable = durable_name(node)
        self.filter = COMMAND_SUBJECTS[0] if node is None else command_subject(node)
        self._config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=max_deliver,
            max_ack_pending=batch * 16,
        )
        self._fetch_timeout = fetch_timeout
        self._gate = gate
        self._closed = False

    async def ensure_consumer(self) -> None:
        jsm = self._js
        try:
            info = await jsm.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await jsm.add_consumer(self.stream, self._config)
            return
        current = info.config
        if (current.filter_subject, current.ack_wait, current.max_deliver) != (
            self._config.filter_subject,
            self._config.ack_wait,
            self._config.max_deliver,
        ):
            await jsm.add_consumer(self.stream, self._config)  # same name: an update

    async def deliveries(self) -> AsyncIterator[Delivery]:
        await self.ensure_consumer()
        sub = await self._js.pull_subscribe_bind(self.durable, self.stream)
        backoff = 0.2
        try:
            while not self._closed:
                if self._gate is not None and not self._gate.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._gate.wait(), timeout=self._fetch_timeout)
                    continue
                try:
                    msgs = await sub.fetch(self.batch, timeout=self._fetch_timeout)
                except TimeoutError:
                    continue
                except NotFoundError:
                    await self.ensure_consumer()
                    continue
                except Exception as err:
                    log.warning("commands.fetch_failed", durable=self.durable, error=str(err))
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    try:
                        await self.ensure_consumer()
                    except Exception as again:
                        log.warning("commands.consumer_unavailable", error=str(again))
                    continue
                backoff = 0.2
                for msg in msgs:
                    yield _delivery(msg)
        finally:
            await sub.unsubscribe()

    async def close(self) -> None:
        self._closed = True


def _delivery(msg: Msg) -> Delivery:
    async def nak(delay: float) -> None:
        await msg.nak(delay=delay)

    try:
        command = codec.decode_command(msg.data)
        error = ""
    except MalformedEvent as err:
        command, error = None, f"command at {msg.subject}: {err}"
    redelivered = bool(msg.metadata.num_delivered and msg.metadata.num_delivered > 1)
    return Delivery(
        command=command, ack=msg.ack, term=msg.term, nak=nak, error=error, redelivered=redelivered
    )
