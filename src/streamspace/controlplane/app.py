"""The FastAPI application factory; lifespan wiring only."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from streamspace import __version__
from streamspace.config import ApiSettings
from streamspace.controlplane.agents.arrivals import Arrivals
from streamspace.controlplane.agents.heartbeats import HeartbeatRecorder
from streamspace.controlplane.agents.reports import ReportRecorder
from streamspace.controlplane.agents.service import AgentService
from streamspace.controlplane.agents.socket import AgentSocket
from streamspace.controlplane.audit import AuditLog
from streamspace.controlplane.auth.api_tokens import ApiTokenService
from streamspace.controlplane.auth.groups import GroupService
from streamspace.controlplane.auth.login_tokens import create_token_cache
from streamspace.controlplane.auth.logins import LoginService
from streamspace.controlplane.auth.origin import SameOriginMiddleware
from streamspace.controlplane.auth.throttle import create_login_throttle
from streamspace.controlplane.auth.users import UserService
from streamspace.controlplane.commands.dispatcher import CommandDispatcher
from streamspace.controlplane.commands.history import CommandHistory
from streamspace.controlplane.commands.reconciler import Reconciler
from streamspace.controlplane.deps import provide
from streamspace.controlplane.health import HealthService
from streamspace.controlplane.http.body_limit import BodyLimit
from streamspace.controlplane.http.error_responses import install_error_handlers
from streamspace.controlplane.hub.factory import create_hub
from streamspace.controlplane.metrics_server import serve_metrics
from streamspace.controlplane.routes import (
    agent_ws,
    agents,
    audit,
    auth,
    commands,
    groups,
    health,
    quota,
    sessions,
    templates,
    users,
    vnc,
)
from streamspace.controlplane.sessions.enforcer import PolicyEnforcer
from streamspace.controlplane.sessions.quotas import Quotas
from streamspace.controlplane.sessions.service import SessionService
from streamspace.controlplane.templates.service import TemplateService
from streamspace.controlplane.tunnels.context import Tunnels
from streamspace.controlplane.tunnels.vnc_tokens import ConnectTickets
from streamspace.db.engine import SessionFactory, create_engine, create_session_factory, transaction
from streamspace.db.migrations.runner import upgrade_async
from streamspace.db.repo import viewers
from streamspace.memory import tune_garbage_collection
from streamspace.protocol import CloseCode
from streamspace.web.pages import mount_web

log = logging.getLogger(__name__)


async def _forget_own_viewers(db: SessionFactory, pod_name: str) -> None:
    """Viewers counted by an earlier process under this replica's name (it crashed with
    tunnels open) are not viewing any more: this process holds none yet."""
    async with transaction(db) as session:
        stale = await viewers.forget_replica(session, pod_name)
    if stale:
        log.warning("uncounted %d viewer(s) left by an earlier run of replica %s", stale, pod_name)


def create_app(settings: ApiSettings | None = None, *, announce_password: bool = True) -> FastAPI:
    """Build one control-plane replica. Migrations run at start (under a lock on PostgreSQL).

    A generated first admin password is printed once unless ``announce_password`` is off
    (``streamspace up`` shows it in its own banner).
    """
    settings = settings or ApiSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await upgrade_async(settings.database_url)
        engine = create_engine(settings.database_url)
        db = create_session_factory(engine)
        hub = create_hub(settings)
        await hub.start()
        dispatcher = CommandDispatcher(db=db, hub=hub, settings=settings)
        tune_garbage_collection()
        audit = AuditLog(db=db)
        session_service = SessionService(
            db=db, settings=settings, ring=hub.ring, direct=dispatcher, cut=hub.cut, audit=audit
        )
        heartbeats = HeartbeatRecorder(
            db=db,
            replica=settings.pod_name,
            flush_interval=min(2.0, settings.heartbeat_interval / 2),
        )
        throttle = create_login_throttle(settings, hub)
        tokens = create_token_cache(settings, hub)
        api_tokens = ApiTokenService(db=db, tokens=tokens)
        user_service = UserService(db=db, tokens=tokens, sessions=session_service, audit=audit)
        tunnels = Tunnels(settings=settings, db=db, hub=hub)
        catalog = TemplateService(db=db, audit=audit)
        provide(
            app,
            audit,
            session_service,
            catalog,
            tunnels,
            user_service,
            api_tokens,
            AgentService(db=db, hub=hub, settings=settings, audit=audit),
            LoginService(
                db=db,
                settings=settings,
                throttle=throttle,
                tokens=tokens,
                api_tokens=api_tokens,
                audit=audit,
            ),
            CommandHistory(db=db),
            GroupService(db=db, audit=audit),
            Quotas(db=db, settings=settings),
            HealthService(db=db, hub=hub),
            ConnectTickets(db=db, settings=settings, sessions=session_service),
            AgentSocket(
                db=db,
                settings=settings,
                hub=hub,
                dispatcher=dispatcher,
                arrivals=Arrivals(db=db, replica=hub.replica),
                reports=ReportRecorder(db=db, settings=settings),
                heartbeats=heartbeats,
            ),
        )
        hub.on_cut(tunnels.registry.cut)
        generated = await user_service.ensure_admin(password=settings.streamspace_admin_password)
        app.state.generated_admin_password = generated
        if generated and announce_password:
            print(f"Created administrator 'admin' with password: {generated}", flush=True)
        await catalog.ensure_defaults()
        await _forget_own_viewers(db, settings.pod_name)
        stop = asyncio.Event()
        reconciler = Reconciler(db=db, hub=hub, settings=settings)
        enforcer = PolicyEnforcer(db=db, settings=settings, ring=hub.ring, cut=hub.cut)
        # Every background task of the replica runs here: one that crashes ends the group,
        # and so the replica, loudly (each logs what ended it; Redis outages are retried).
        async with asyncio.TaskGroup() as group:
            group.create_task(hub.run(stop), name="agenthub")
            group.create_task(dispatcher.run(stop), name="dispatcher")
            group.create_task(reconciler.run(stop), name="reconciler")
            group.create_task(enforcer.run(stop), name="policies")
            group.create_task(heartbeats.run(stop), name="heartbeats")
            if settings.metrics_port:
                listener = serve_metrics(hub=hub, db=db, settings=settings, stop=stop)
                group.create_task(listener, name="metrics")
            try:
                yield
            finally:
                stop.set()
                for connection in hub.local_connections():
                    await connection.close(CloseCode.GOING_AWAY, "control plane stopping")
        await throttle.close()
        await hub.close()
        await engine.dispose()

    # No OpenTelemetry here (metrics are Prometheus, at /metrics): switching FastAPI's
    # native telemetry off saves it looking for providers on every request.
    off: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}
    app = FastAPI(title="StreamSpace", version=__version__, lifespan=lifespan, telemetry=off)
    routers = (
        health,
        auth,
        users,
        quota,
        templates,
        sessions,
        vnc,
        agents,
        commands,
        groups,
        audit,
        agent_ws,
    )
    for module in routers:
        app.include_router(module.router)
    install_error_handlers(app)
    app.add_middleware(SameOriginMiddleware)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)  # outermost: runs first
    mount_web(app)
    return app
