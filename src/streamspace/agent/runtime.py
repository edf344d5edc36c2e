"""The agent runtime: dial out to the control plane, say hello, run the commands it sends.

Commands run in their own tasks (the read loop never waits for a platform call), one at a
time per session, and outlive the connection that delivered them; their outcome goes to
whichever connection is open when they finish. Outcomes are stored before they are sent, so
a re-delivered command is answered from the store instead of running twice.

Under leader election the runtime serves one term: its hello carries the term's epoch, and
it takes no command once the term is no longer held, even if its socket is still open.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Mapping

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

import streamspace
from streamspace.agent.commands import DEFAULT_TIMEOUTS, SessionBook, SessionLocks, execute
from streamspace.agent.connection import (
    AgentConnection,
    Backoff,
    Ended,
    base_urls,
    closed,
    dispatch,
    heartbeat_loop,
    monitor_loop,
    read_loop,
    refusal_for_status,
    websocket_log,
    ws_url,
)
from streamspace.agent.executed import ExecutedCommands, Outcome
from streamspace.agent.leader.base import Term
from streamspace.agent.platforms.base import Platform
from streamspace.agent.tunnel import Tunnels
from streamspace.aio import supervise, unless_stopped, wait_or_stop
from streamspace.batching import Coalescer
from streamspace.bounds import MAX_PROGRESS_TEXT
from streamspace.config import AgentSettings
from streamspace.inventory import split_inventory
from streamspace.protocol import (
    MAX_FRAME_BYTES,
    PROTOCOL_VERSION,
    Ack,
    AckPayload,
    Action,
    CloseCode,
    CommandPayload,
    Complete,
    Failed,
    HelloPayload,
    PlatformName,
    Progress,
    ProgressPayload,
    ProtocolError,
    TunnelPayload,
    Welcome,
    WelcomePayload,
    parse_server_message,
)
from streamspace.wire import agent_headers

log = logging.getLogger(__name__)


class AgentRuntime:
    """Keeps one agent connected to the control plane and executes its commands."""

    def __init__(
        self,
        settings: AgentSettings,
        platform: Platform,
        executed: ExecutedCommands,
        api_key: str,
        *,
        backoff: Backoff | None = None,
        command_timeouts: Mapping[Action, float] | None = None,
        poll_interval: float = 2.0,
        hello_timeout: float = 10.0,
        rng: random.Random | None = None,
        leader: Term | None = None,
    ) -> None:
        self.settings = settings
        self.platform = platform
        self.executed = executed
        self._recorder = Coalescer(self._record, max_batch=500, name="record-outcomes")
        self._api_key = api_key
        self.backoff = backoff or Backoff()
        self.command_timeouts = {**DEFAULT_TIMEOUTS, **(command_timeouts or {})}
        self.poll_interval = poll_interval
        self.hello_timeout = hello_timeout
        self._rng = rng or random.Random()
        self.leader = leader
        """The leadership term this runtime serves (``None`` without leader election)."""
        PlatformName(platform.name)  # fail fast on a platform the protocol doesn't know
        self._urls = [ws_url(base) for base in base_urls(settings.control_plane_url)]
        self._book = SessionBook()
        self._session_locks = SessionLocks()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tunnels = Tunnels()
        self._progress_sends: set[asyncio.Task[None]] = set()
        platform.progress = self._report_progress
        self._conn: AgentConnection | None = None
        self.connected = asyncio.Event()
        """Set while a welcomed connection is open."""
        self.welcome: WelcomePayload | None = None
        """The latest ``welcome`` received (kept after the connection ends)."""
        self.connections = 0
        """How many connections got a welcome so far."""

    @property
    def active_sessions(self) -> int:
        return len(self._book.running)

    @property
    def running_sessions(self) -> frozenset[str]:
        return frozenset(self._book.running)

    @property
    def running_commands(self) -> frozenset[str]:
        return frozenset(self._tasks)

    # --- the reconnect loop ------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Stay connected until ``stop`` is set. Sessions keep running after this returns;
        commands still in flight are cancelled (unrecorded, so they run again when the
        control plane re-delivers them to the next agent process)."""
        loop = asyncio.get_running_loop()
        attempt = index = 0
        try:
            while not stop.is_set():
                url = self._urls[index % len(self._urls)]
                began = loop.time()
                ended = await self._connect_once(url, stop)
                if ended is Ended.STOPPED or stop.is_set():
                    break
                if ended is Ended.DROPPED and loop.time() - began > self.backoff.reset_after:
                    attempt = 0
                if ended is not Ended.DROPPED:
                    index += 1  # this replica failed us: try the next URL first
                if ended is Ended.REFUSED:
                    delay = self.backoff.jittered(self.backoff.cap, self._rng)
                else:
                    delay = self.backoff.delay(attempt, self._rng)
                    attempt += 1
                log.info("reconnecting in %.2f s", delay)
                await wait_or_stop(stop, delay)
        finally:
            await self._cancel_commands()
            await self._tunnels.close_all()

    async def _connect_once(self, url: str, stop: asyncio.Event) -> Ended:
        try:
            ws = await unless_stopped(stop, self._dial(url))
        except InvalidStatus as exc:
            refusal = refusal_for_status(exc.response.status_code)
            if refusal is None:
                log.warning("cannot connect to %s: %s", url, exc)
                return Ended.FAILED
            log.error("%s refused the agent (HTTP %d): %s", url, exc.response.status_code, refusal)
            return Ended.REFUSED
        except (OSError, TimeoutError, WebSocketException) as exc:
            log.warning("cannot connect to %s: %s", url, exc or type(exc).__name__)
            return Ended.FAILED
        if ws is None:
            return Ended.STOPPED
        conn = AgentConnection(ws, url)
        try:
            return await self._serve(conn, stop)
        finally:
            self._conn = None
            self.connected.clear()
            await ws.close()

    def _headers(self) -> dict[str, str]:
        return agent_headers(self.settings.agent_id, self._api_key)

    async def _dial(self, url: str) -> ClientConnection:
        return await connect(
            url,
            additional_headers=self._headers(),
            max_size=MAX_FRAME_BYTES,
            open_timeout=10,
            logger=websocket_log,
        )

    async def _serve(self, conn: AgentConnection, stop: asyncio.Event) -> Ended:
        try:
            welcome = await unless_stopped(stop, self._handshake(conn))
        except ConnectionClosed as exc:
            return closed(conn.url, exc, welcomed=False)
        except TimeoutError:
            log.warning("no welcome from %s within %g s", conn.url, self.hello_timeout)
            return Ended.FAILED
        except Exception:
            log.exception("handshake with %s failed", conn.url)
            return Ended.FAILED
        if welcome is None:
            await conn.ws.close(CloseCode.NORMAL, "agent shutting down")
            return Ended.STOPPED
        self.welcome = welcome
        self.connections += 1
        self._conn = conn
        self.connected.set()
        log.info("connected to %s (replica %s)", conn.url, welcome.replica)
        name, error = await supervise(self._connection_tasks(conn, welcome, stop))
        if name == "stop":
            await self._cancel_commands()  # stop acting first (a lost lease), then say goodbye
            await conn.ws.close(CloseCode.NORMAL, "agent shutting down")
            return Ended.STOPPED
        if isinstance(error, ConnectionClosed):
            return closed(conn.url, error, welcomed=True)
        log.error("agent task %r crashed; dropping the connection", name, exc_info=error)
        await conn.ws.close(1011, "agent internal error")
        return Ended.DROPPED

    def _connection_tasks(
        self, conn: AgentConnection, welcome: WelcomePayload, stop: asyncio.Event
    ) -> dict[str, asyncio.Task[None]]:
        """The supervised tasks of one connection; ``stop`` first so it wins ties."""
        heartbeat = heartbeat_loop(
            conn,
            interval=welcome.heartbeat_interval,
            book=self._book,
            capacity=self.settings.agent_capacity,
        )
        monitor = monitor_loop(
            conn, platform=self.platform, book=self._book, interval=self.poll_interval
        )
        return {
            "stop": asyncio.create_task(_wait_stop(stop)),
            "reader": asyncio.create_task(read_loop(conn, self._on_command, self._on_tunnel)),
            "heartbeat": asyncio.create_task(heartbeat),
            "monitor": asyncio.create_task(monitor),
        }

    async def _handshake(self, conn: AgentConnection) -> WelcomePayload:
        """Send ``hello`` with the sessions that run, wait for ``welcome``."""
        running = await self.platform.list_running()
        self._book.adopt(running)
        hello = HelloPayload(
            v=PROTOCOL_VERSION,
            agent_id=self.settings.agent_id,
            platform=PlatformName(self.platform.name),
            version=streamspace.__version__,
            capacity=self.settings.agent_capacity,
            leader_epoch=None if self.leader is None else self.leader.epoch,
        )
        split = split_inventory(hello, running)
        for refused in split.refused:
            # Not sent (it would be refused in a loop): the control plane counts it as lost.
            log.error(
                "session %s left out of the inventory: %s",
                refused.session.session_id,
                refused.reason,
            )
        for page in split.messages:
            await conn.send(page)
        async with asyncio.timeout(self.hello_timeout):
            while True:
                frame = await conn.ws.recv()
                try:
                    message = parse_server_message(frame)
                except ProtocolError as exc:
                    log.warning("ignoring malformed frame from %s: %s", conn.url, exc)
                    continue
                if isinstance(message, Welcome):
                    return message.payload
                # Anything else before welcome (an error, say) gets the usual treatment.
                await dispatch(message, conn, self._on_command, self._on_tunnel)

    # --- commands ----------------------------------------------------------------------

    async def _on_command(self, command: CommandPayload, conn: AgentConnection) -> None:
        """Ack, then run the command once; duplicates get the stored or pending answer."""
        cid = command.command_id
        if not self._may_act(f"command {cid}"):
            return
        await conn.send(Ack(payload=AckPayload(command_id=cid)))
        if cid in self._tasks:
            log.info("command %s is already running; acknowledged again", cid)
            return
        stored = self.executed.get(cid)
        if stored is not None:
            log.info("command %s already executed; re-sending its outcome", cid)
            await conn.send(stored.to_message(cid))
            return
        log.info("command %s: %s %s", cid, command.action, command.session_id)
        self._tasks[cid] = asyncio.create_task(self._run_command(command), name=f"command-{cid}")

    async def _run_command(self, command: CommandPayload) -> None:
        cid = command.command_id
        try:
            # The deadline starts once the session's earlier commands are done.
            async with self._session_locks.hold(command.session_id):
                timeout = self.command_timeouts[command.action]
                outcome = await execute(self.platform, self._book, command, seconds=timeout)
            # A retryable failure is not final: the control plane sends the command again
            # and it must then really run again, not be answered from the record.
            if not outcome.retryable:
                try:
                    await self._recorder.submit((cid, outcome))
                except Exception:
                    log.exception("could not store the outcome of %s; sending it anyway", cid)
        finally:
            # Only after recording: a duplicate arriving now is answered from the store.
            self._tasks.pop(cid, None)
        if outcome.completed:
            log.info("command %s completed", cid)
        else:
            log.warning("command %s failed: %s", cid, outcome.error)
        try:
            await self._send_current(outcome.to_message(cid), cid)
        except Exception:
            log.exception("could not send the outcome of command %s", cid)

    async def _record(self, outcomes: list[tuple[str, Outcome]]) -> list[None]:
        """Store outcomes that finished together with one write (one fsync for all)."""
        await asyncio.to_thread(self.executed.record_many, outcomes)
        return [None] * len(outcomes)

    def _report_progress(self, session_id: str, stage: str, message: str) -> None:
        """Tell the control plane how far a start got; best effort (a lost one is only
        words: the outcome still follows)."""
        conn = self._conn
        if conn is None:
            return
        try:
            payload = ProgressPayload(
                session_id=session_id, stage=stage, message=message[:MAX_PROGRESS_TEXT]
            )
        except ValidationError as exc:
            log.warning("progress of session %s not reported: %s", session_id, exc)
            return
        task = asyncio.create_task(self._send_progress(conn, Progress(payload=payload)))
        self._progress_sends.add(task)
        task.add_done_callback(self._progress_sends.discard)

    async def _send_progress(self, conn: AgentConnection, message: Progress) -> None:
        try:
            await conn.send(message)
        except (ConnectionClosed, ConnectionError):
            log.info("progress of session %s not sent (disconnected)", message.payload.session_id)

    async def _send_current(self, message: Complete | Failed, cid: str) -> None:
        conn = self._conn
        try:
            if conn is None:
                raise ConnectionError("not connected")
            await conn.send(message)
        except (ConnectionClosed, ConnectionError):
            log.info("outcome of command %s not sent (disconnected); resent on re-delivery", cid)

    def _on_tunnel(self, tunnel: TunnelPayload, conn: AgentConnection) -> None:
        """Open a VNC tunnel in its own task; it outlives this control connection."""
        if not self._may_act(f"tunnel {tunnel.tunnel_id}"):
            return
        self._tunnels.open(
            tunnel,
            conn.url,
            self._headers(),
            endpoint=self._book.endpoint,
            password=self.platform.vnc_password,
        )

    def _may_act(self, what: str) -> bool:
        """False once the leadership term is over (the socket may not have closed yet)."""
        if self.leader is None or self.leader.held():
            return True
        log.warning("not the leader any more (epoch %d): ignoring %s", self.leader.epoch, what)
        return False

    async def _cancel_commands(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _wait_stop(stop: asyncio.Event) -> None:
    await stop.wait()
