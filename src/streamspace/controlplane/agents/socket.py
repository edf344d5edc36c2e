"""The control plane's side of the agent protocol: one coroutine per agent connection.

Authenticate (per-agent key) → hello → register in the hub → welcome → read loop. Every
message is validated before anything changes; a bad frame gets an ``error`` and a 44xx
close. A failure to record a message (e.g. the database is down) closes the connection
with 1011: the agent reconnects, its unfinished commands are sent again, and it answers
them from its record of executed commands, so nothing is lost or run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.websockets import WebSocket, WebSocketDisconnect

from streamspace.config import ApiSettings
from streamspace.controlplane import metrics
from streamspace.controlplane.agents.arrivals import Arrivals
from streamspace.controlplane.agents.connection import ConnectedAgent
from streamspace.controlplane.agents.credentials import CredentialReader
from streamspace.controlplane.agents.heartbeats import HeartbeatRecorder
from streamspace.controlplane.agents.reports import Report, ReportRecorder
from streamspace.controlplane.auth.hashing import matches
from streamspace.controlplane.commands.dispatcher import CommandDispatcher
from streamspace.controlplane.hub import AgentHub
from streamspace.db.engine import SessionFactory, transaction
from streamspace.db.repo import agents as agent_repo
from streamspace.db.repo.agents import Credentials
from streamspace.inventory import InventoryError, InventoryPages
from streamspace.protocol import (
    PROTOCOL_VERSION,
    Ack,
    AgentMessage,
    CloseCode,
    Complete,
    Error,
    ErrorPayload,
    Failed,
    Heartbeat,
    Hello,
    Inventory,
    ProtocolError,
    RunningSession,
    Welcome,
    WelcomePayload,
    close_reason,
    parse_agent_message,
)
from streamspace.states import AgentApproval
from streamspace.wire import agent_credentials

log = logging.getLogger(__name__)

HELLO_TIMEOUT = 10.0
INVENTORY_TIMEOUT = 30.0
"""Seconds from the hello to the last page of the agent's inventory."""
INBOX_SIZE = 1000
"""Frames read but not yet applied; beyond this the reader waits (back-pressure)."""
BURST_SIZE = 200
ACK_LINGER = 0.02
"""Seconds a burst of only acknowledgements waits for the outcomes that usually follow."""


class _Rejected(Exception):
    def __init__(self, code: CloseCode, reason: str, *, error: str = "bad_message") -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.error = error


class AgentSocket:
    """Serves ``WS /api/v1/agents/connect``."""

    def __init__(
        self,
        *,
        db: SessionFactory,
        settings: ApiSettings,
        hub: AgentHub,
        dispatcher: CommandDispatcher,
        arrivals: Arrivals,
        reports: ReportRecorder,
        heartbeats: HeartbeatRecorder,
    ) -> None:
        self._db = db
        self._settings = settings
        self._hub = hub
        self._dispatcher = dispatcher
        self._arrivals = arrivals
        self._reports = reports
        self._heartbeats = heartbeats
        self._credentials = CredentialReader(db=db)

    async def serve(self, websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            agent = await self._authenticate(websocket)
            hello = await self._receive_hello(websocket, agent)
            inventory = await _receive_inventory(websocket, hello)
            await self._fence(agent, hello)
        except _Rejected as rejected:
            await _reject(websocket, rejected)
            return
        except WebSocketDisconnect:
            log.info("agent connection closed by the agent before its hello")
            return
        except TimeoutError:
            await _close_quietly(
                websocket, CloseCode.BAD_MESSAGE, f"no hello received within {HELLO_TIMEOUT:g} s"
            )
            return
        except Exception as exc:  # e.g. the database is down: the agent retries later
            log.warning("cannot accept agent connection now: %s", exc)
            await _close_quietly(websocket, CloseCode.INTERNAL_ERROR, "control plane unavailable")
            return
        await self._run_connection(websocket, hello, inventory)

    async def _run_connection(
        self, websocket: WebSocket, hello: Hello, inventory: list[RunningSession]
    ) -> None:
        connection = ConnectedAgent(
            websocket, agent_id=hello.payload.agent_id, platform=hello.payload.platform
        )
        replaced = await self._hub.register(connection)
        if replaced is not None:
            await replaced.close(CloseCode.REPLACED, "replaced by a newer connection")
        try:
            await self._arrivals.connected(hello, inventory)
            await connection.send(
                Welcome(
                    payload=WelcomePayload(
                        replica=self._hub.replica,
                        heartbeat_interval=self._settings.heartbeat_interval,
                    )
                )
            )
            connection.welcomed.set()
            total = len(self._hub.local_connections())
            log.info(
                "[AgentHub] Registered agent: %s (platform: %s), total connections: %d",
                connection.agent_id,
                connection.platform,
                total,
            )
            metrics.AGENTS_CONNECTED.labels(self._hub.replica).set(total)
            self._dispatcher.wake(connection.agent_id)
            await self._read_loop(connection)
        except _Rejected as rejected:
            await _reject(websocket, rejected, connection=connection)
        except WebSocketDisconnect:
            pass
        except Exception:
            log.exception("agent %s: failed to process a message; closing", connection.agent_id)
            await connection.close(CloseCode.INTERNAL_ERROR, "internal error; reconnect")
        finally:
            await connection.close(CloseCode.NORMAL, "bye")
            if await self._hub.unregister(connection):
                self._heartbeats.forget(connection.agent_id)
                try:
                    await self._arrivals.disconnected(connection.agent_id)
                except Exception as exc:  # the reconciler marks it offline later
                    log.warning("could not mark agent %s offline: %s", connection.agent_id, exc)
            metrics.AGENTS_CONNECTED.labels(self._hub.replica).set(
                len(self._hub.local_connections())
            )
            log.info("[AgentHub] Unregistered agent: %s", connection.agent_id)

    async def _authenticate(self, websocket: WebSocket) -> Credentials:
        agent_id, key = agent_credentials(websocket.headers)
        agent = await self._credentials.get(agent_id) if agent_id else None
        if agent is None or key is None or not matches(key, agent.api_key_hash):
            raise _Rejected(
                CloseCode.UNAUTHORIZED, "invalid agent credentials", error="unauthorized"
            )
        if agent.approval != AgentApproval.APPROVED:
            reason = (
                "agent pending approval"
                if agent.approval == AgentApproval.PENDING
                else "agent revoked"
            )
            raise _Rejected(CloseCode.FORBIDDEN, reason, error="forbidden")
        return agent

    async def _receive_hello(self, websocket: WebSocket, agent: Credentials) -> Hello:
        message = await asyncio.wait_for(_receive(websocket), HELLO_TIMEOUT)
        if not isinstance(message, Hello):
            raise _Rejected(CloseCode.BAD_MESSAGE, f"expected hello, got {message.type}")
        if message.payload.v != PROTOCOL_VERSION:
            raise _Rejected(
                CloseCode.UNSUPPORTED_VERSION,
                f"protocol version {message.payload.v} not supported (need {PROTOCOL_VERSION})",
            )
        if message.payload.agent_id != agent.agent_id:
            raise _Rejected(CloseCode.BAD_MESSAGE, "hello agent_id does not match credentials")
        return message

    async def _fence(self, agent: Credentials, hello: Hello) -> None:
        """Refuse a stale leader: a hello's leader epoch may not be below the highest seen.

        Checked and recorded in one conditional UPDATE, so of two replicas of one agent
        racing to connect only the newer leader gets in; an agent that ever connected under
        leader election cannot connect without an epoch (an un-fenced second replica).
        """
        epoch = hello.payload.leader_epoch
        if epoch is None:
            if agent.leader_epoch is not None:
                raise _Rejected(
                    CloseCode.STALE_LEADER,
                    f"hello without leader_epoch (agent runs under leader election, epoch"
                    f" {agent.leader_epoch})",
                    error="stale_leader",
                )
            return
        async with transaction(self._db) as db:
            claimed = await agent_repo.claim_leader_epoch(db, agent.agent_id, epoch)
        if not claimed:
            raise _Rejected(
                CloseCode.STALE_LEADER,
                f"leader epoch {epoch} is stale: a newer leader of this agent has connected",
                error="stale_leader",
            )

    async def _read_loop(self, connection: ConnectedAgent) -> None:
        """A reader keeps the socket drained; a processor applies what it read in bursts.

        Frames are applied in arrival order; a bad frame or a disconnect is acted on only
        after everything received before it was applied.
        """
        inbox: asyncio.Queue[Report | Heartbeat | BaseException] = asyncio.Queue(maxsize=INBOX_SIZE)

        async def read() -> None:
            while True:
                try:
                    message = await _receive(connection.websocket)
                    connection.touch()
                    if isinstance(message, Hello):
                        raise _Rejected(CloseCode.BAD_MESSAGE, "duplicate hello")
                    if isinstance(message, Inventory):
                        raise _Rejected(CloseCode.BAD_MESSAGE, "inventory after the handshake")
                except (_Rejected, WebSocketDisconnect) as ended:
                    await inbox.put(ended)
                    return
                await inbox.put(message)

        reader = asyncio.create_task(read(), name=f"agent-reader-{connection.agent_id}")
        try:
            while True:
                burst = await _next_burst(inbox)
                reports = [item for item in burst if not isinstance(item, BaseException)]
                if reports:
                    await self._apply(connection, reports)
                ended = next((item for item in burst if isinstance(item, BaseException)), None)
                if ended is not None:
                    raise ended
        finally:
            reader.cancel()

    async def _apply(self, connection: ConnectedAgent, messages: list[Report | Heartbeat]) -> None:
        beats = [message for message in messages if isinstance(message, Heartbeat)]
        if beats:
            self._heartbeats.note(connection.agent_id, beats[-1].payload)
            if not await self._hub.refresh(connection):
                await connection.close(CloseCode.REPLACED, "replaced by a newer connection")
        reports = [message for message in messages if not isinstance(message, Heartbeat)]
        if not reports:
            return
        applied = await self._reports.apply(connection.agent_id, reports)
        for error in applied.errors:
            log.warning("agent %s: %s", connection.agent_id, error.payload.message)
            await connection.send(error)
        answered = (r.payload.command_id for r in reports if isinstance(r, Ack | Complete | Failed))
        if connection.note_answered(answered) or applied.wake:
            self._dispatcher.wake(connection.agent_id)


async def _receive_inventory(websocket: WebSocket, hello: Hello) -> list[RunningSession]:
    """The sessions the agent runs: the hello's, then its ``inventory`` pages until the last
    (nothing is reconciled before the inventory is complete)."""
    pages = InventoryPages(hello.payload)
    try:
        async with asyncio.timeout(INVENTORY_TIMEOUT):
            while not pages.complete:
                message = await _receive(websocket)
                if not isinstance(message, Inventory):
                    raise _Rejected(
                        CloseCode.BAD_MESSAGE, f"expected inventory, got {message.type}"
                    )
                pages.add(message.payload)
    except InventoryError as exc:
        raise _Rejected(CloseCode.BAD_MESSAGE, str(exc)) from None
    except TimeoutError:
        raise _Rejected(
            CloseCode.BAD_MESSAGE, f"inventory not complete within {INVENTORY_TIMEOUT:g} s"
        ) from None
    return pages.sessions


async def _next_burst(
    inbox: asyncio.Queue[Report | Heartbeat | BaseException],
) -> list[Report | Heartbeat | BaseException]:
    """What arrived since the last burst, waiting up to ``ACK_LINGER`` more while it holds
    only acknowledgements: the outcome usually follows at once, and an ack applied with
    its outcome costs no statement of its own."""
    burst: list[Report | Heartbeat | BaseException] = [await inbox.get()]
    while len(burst) < BURST_SIZE:
        if not inbox.empty():
            burst.append(inbox.get_nowait())
        elif _only_acks(burst):
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can drop an item
                # that arrives just as it times out; a cancelled Queue.get leaves it queued.
                async with asyncio.timeout(ACK_LINGER):
                    burst.append(await inbox.get())
            except TimeoutError:
                break
        else:
            break
    return burst


def _only_acks(burst: list[Report | Heartbeat | BaseException]) -> bool:
    return any(isinstance(item, Ack) for item in burst) and all(
        isinstance(item, Ack | Heartbeat) for item in burst
    )


async def _receive(websocket: WebSocket) -> AgentMessage:
    """The next agent message; raises WebSocketDisconnect or _Rejected."""
    frame = await websocket.receive()
    if frame["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(frame.get("code", 1000))
    text = frame.get("text")
    if text is None:
        raise _Rejected(CloseCode.BAD_MESSAGE, "binary frames are not part of the agent protocol")
    try:
        return parse_agent_message(text)
    except ProtocolError as exc:
        raise _Rejected(exc.close_code, str(exc)) from None


async def _reject(
    websocket: WebSocket, rejected: _Rejected, *, connection: ConnectedAgent | None = None
) -> None:
    log.warning("rejecting agent connection: %s", rejected.reason)
    error = Error(payload=ErrorPayload(code=rejected.error, message=rejected.reason))
    try:
        if connection is not None:
            await connection.send(error)
            await connection.close(rejected.code, rejected.reason)
            return
        await websocket.send_text(error.model_dump_json())
    except (RuntimeError, WebSocketDisconnect):
        return
    await _close_quietly(websocket, rejected.code, rejected.reason)


async def _close_quietly(websocket: WebSocket, code: CloseCode, reason: str) -> None:
    # The agent may be gone already (WebSocketDisconnect): nothing to close then.
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        await websocket.close(code=int(code), reason=close_reason(reason))
