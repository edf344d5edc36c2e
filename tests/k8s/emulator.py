"""A Kubernetes API server emulator over real HTTP, for testing the kubernetes agent where no
kube-apiserver can be installed.

It serves the resources the agent uses (:data:`tests.k8s.store.KINDS`) as the real server
does where a client can tell: resourceVersion and 409 on stale writes, merge and JSON patch,
label and field selectors, watch with resume (410 once compacted), the scale and status
subresources, discovery, bearer-token auth and ``kind: Status`` errors. It plays the
controllers (:mod:`tests.k8s.controllers`) and takes faults: the server down (connections
refused, or every request answered 503/500) and an injected 409 on the next write of a kind.

It runs on its own thread and event loop, so a test's loop (or a blocked one) never slows it;
the methods below are called from the test's thread."""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import copy
import json
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from tests.k8s.controllers import Behaviour, Controllers
from tests.k8s.store import (
    KINDS,
    ApiFailure,
    Kind,
    Obj,
    Store,
    apply_patch,
    conflict,
    matcher,
)

T = TypeVar("T")
WATCH_TIMEOUT = 1800  # seconds, as the real server's default request timeout


@dataclass(frozen=True)
class Call:
    """One request the emulator answered (for counting API calls)."""

    method: str
    path: str
    watch: bool


class KubeEmulator:
    """Start with :meth:`start`, stop with :meth:`close`; ``url`` and ``token`` reach it."""

    def __init__(self, *, namespace: str = "streamspace") -> None:
        self.namespace = namespace
        self.token = secrets.token_hex(16)
        self.behaviour = Behaviour()
        """How pods fare, unless :attr:`behaviours` names their Deployment."""
        self.behaviours: dict[str, Behaviour] = {}
        self.calls: list[Call] = []
        self.kubeconfig_path: Path | None = None
        """The last kubeconfig written by :meth:`kubeconfig`."""
        self.port = 0
        self._failing: int | None = None
        self._conflicts: Counter[str] = Counter()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="kube-emulator", daemon=True)
        self._stopped: asyncio.Event | None = None

    def agent_env(self) -> dict[str, str]:
        """The environment that points an agent process at this server."""
        assert self.kubeconfig_path is not None, "write a kubeconfig first"
        return {"KUBECONFIG": str(self.kubeconfig_path), "NAMESPACE": self.namespace}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- life ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the Kubernetes API emulator did not start")

    def close(self) -> None:
        if self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stopped = asyncio.Event()
        self.store = Store()
        self.controllers = Controllers(self.store, self._behaviour_of)
        app = web.Application(client_max_size=8 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        await self._listen()
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            self.controllers.close()
            self._cut_connections()  # open watches would hold the shutdown up
            await self._runner.cleanup()

    async def _listen(self) -> None:
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert isinstance(server, asyncio.Server)
            self.port = server.sockets[0].getsockname()[1]

    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the emulator's loop (the store is only touched there)."""

        async def run() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    # --- hooks for tests ----------------------------------------------------------------

    def kubeconfig(self, path: Path) -> Path:
        """Write a kubeconfig for this server (a bearer token, the test namespace)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "emulator", "cluster": {"server": self.url}}],
            "users": [{"name": "emulator", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "emulator",
                    "context": {
                        "cluster": "emulator",
                        "user": "emulator",
                        "namespace": self.namespace,
                    },
                }
            ],
            "current-context": "emulator",
        }
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.kubeconfig_path = path
        return path

    def get(self, plural: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of one stored object, or ``None``."""
        key = (plural, namespace or self.namespace, name)
        return self._call(lambda: copy.deepcopy(self.store.objects.get(key)))

    def list(
        self, plural: str, *, labels: str | None = None, fields: str | None = None
    ) -> list[Obj]:
        """Copies of the objects of a kind in the test namespace, selected as by the API."""
        return self._call(
            lambda: copy.deepcopy(
                self.store.select(plural, self.namespace, labels=labels, fields=fields)
            )
        )

    def create(self, plural: str, body: Obj) -> Obj:
        """Store an object without HTTP (e.g. to seed many sessions); controllers react."""
        return self._call(
            lambda: copy.deepcopy(self.store.create(plural, self.namespace, copy.deepcopy(body)))
        )

    def delete(self, plural: str, name: str) -> None:
        self._call(lambda: self.store.delete(plural, self.namespace, name))

    def crash(self, deployment: str, reason: str = "Error") -> None:
        """The running pod of ``deployment`` dies by itself (``Error`` or ``OOMKilled``)."""

        def run() -> None:
            pods = [p for (ns, p), d in self.controllers.owner.items() if d == deployment]
            for pod in pods:
                self.controllers.lives.pop((self.namespace, pod)).cancel()
                self.controllers.crash(self.namespace, pod, reason)

        self._call(run)

    def down(self, status: int | None = None) -> None:
        """The API server goes away: new connections are refused (``status=None``), or every
        request is answered ``status`` (503, 500). Open connections and watches are cut."""

        async def run() -> None:
            self._failing = status
            if status is None:
                await self._site.stop()
            self._cut_connections()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def _cut_connections(self) -> None:
        server = self._runner.server
        for handler in server.connections if server is not None else []:
            handler.force_close()
        self.store.wake()

    def up(self) -> None:
        """The API server is back, on the same port."""

        async def run() -> None:
            if self._failing is None and self._site not in self._runner.sites:
                await self._listen()
            self._failing = None

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def conflict_next(self, plural: str, times: int = 1) -> None:
        """The next ``times`` updates (PUT or PATCH) of a ``plural`` object get 409 Conflict,
        as if another writer changed it just before (its resourceVersion moves)."""
        self._call(lambda: self._conflicts.update({plural: times}))

    def compact(self) -> None:
        """Forget the watch history: resuming from an older resourceVersion is 410 Gone."""
        self._call(self.store.compact)

    def count(self, *, since: int = 0) -> Counter[str]:
        """Requests since ``calls[since]`` by "METHOD plural[/sub]" (watches as "WATCH")."""
        counted: Counter[str] = Counter()
        for call in self.calls[since:]:
            parts = call.path.strip("/").split("/")
            rest = parts[parts.index("namespaces") + 2 :] if "namespaces" in parts else parts[-1:]
            what = rest[0] + ("/" + rest[2] if len(rest) > 2 else "")
            counted[f"{'WATCH' if call.watch else call.method} {what}"] += 1
        return counted

    def _behaviour_of(self, deployment: str) -> Behaviour:
        return self.behaviours.get(deployment, self.behaviour)

    # --- HTTP ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        watch = request.query.get("watch", "").lower() in ("1", "true")
        self.calls.append(Call(request.method, request.path, watch))
        try:
            if self._failing is not None:
                raise ApiFailure(
                    self._failing,
                    "ServiceUnavailable" if self._failing == 503 else "InternalError",
                    "the API server is unavailable (emulated fault)",
                )
            if request.headers.get("Authorization") != f"Bearer {self.token}":
                raise ApiFailure(401, "Unauthorized", "Unauthorized")
            return await self._route(request, watch)
        except ApiFailure as failure:
            return _json(failure.status(), failure.code)

    async def _route(self, request: web.Request, watch: bool) -> web.StreamResponse:
        parts = [p for p in request.path.split("/") if p]
        if parts == ["version"]:
            return _json(VERSION)
        if parts in (["api"], ["apis"]) or (parts[:1] == ["apis"] and len(parts) == 2):
            return _json(_discovery_root(parts[0], self.url))
        if parts[:1] == ["api"] and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise NOT_FOUND
        if not rest:
            return _json(_resource_list(group, version))
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) <= 2 and not group:
            return self._namespace(request, rest)
        if rest[0] == "namespaces":
            namespace, rest = rest[1], rest[2:]
        kind = KINDS.get(rest[0])
        if kind is None or (kind.group, kind.version) != (group, version) or len(rest) > 3:
            raise NOT_FOUND
        name, sub = [*rest[1:], None, None][:2]
        if sub not in (None, *(("status",) if kind.status else ()), *(("scale",) * kind.scale)):
            raise NOT_FOUND
        if name is None:
            return await self._collection(request, kind, namespace, watch)
        if namespace is None:
            raise NOT_FOUND
        return await self._item(request, kind, namespace, name, sub)

    def _namespace(self, request: web.Request, rest: list[str]) -> web.StreamResponse:
        """Every namespace exists (the test's and any other)."""
        if request.method != "GET" or len(rest) != 2:
            raise ApiFailure(405, "MethodNotAllowed", "namespaces are read-only here")
        return _json(
            {
                "kind": "Namespace",
                "apiVersion": "v1",
                "metadata": {"name": rest[1]},
                "status": {"phase": "Active"},
            }
        )

    async def _collection(
        self, request: web.Request, kind: Kind, namespace: str | None, watch: bool
    ) -> web.StreamResponse:
        query = request.query
        labels, fields = query.get("labelSelector"), query.get("fieldSelector")
        if watch:
            return await self._watch(request, kind, namespace, labels, fields)
        if request.method == "GET":
            items = self.store.select(kind.plural, namespace, labels=labels, fields=fields)
            return _json(self._list(kind, items, query))
        if namespace is None:
            raise ApiFailure(405, "MethodNotAllowed", "writes need a namespace")
        if request.method == "POST":
            return _json(self.store.create(kind.plural, namespace, await _body(request)), 201)
        if request.method == "DELETE":
            items = self.store.select(kind.plural, namespace, labels=labels, fields=fields)
            gone = [self.store.delete(kind.plural, namespace, o["metadata"]["name"]) for o in items]
            return _json(self._list(kind, gone, {}))
        raise ApiFailure(405, "MethodNotAllowed", f"{request.method} is not allowed here")

    def _list(self, kind: Kind, items: list[Obj], query: Any) -> Obj:
        """A list, paged by ``limit`` / ``continue`` (the token is the last name given)."""
        after = query.get("continue", "")
        items = [o for o in items if o["metadata"]["name"] > after] if after else items
        limit = _number(query, "limit")
        meta: Obj = {"resourceVersion": str(self.store.rv)}
        if limit and len(items) > limit:
            items = items[:limit]
            meta["continue"] = items[-1]["metadata"]["name"]
        plain = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in items]
        return {
            "kind": f"{kind.kind}List",
            "apiVersion": kind.api_version,
            "metadata": meta,
            "items": plain,
        }

    async def _item(
        self, request: web.Request, kind: Kind, namespace: str, name: str, sub: str | None
    ) -> web.StreamResponse:
        store, plural = self.store, kind.plural
        if request.method == "GET":
            obj = store.get(plural, namespace, name)
            return _json(_scale(obj) if sub == "scale" else obj)
        if request.method == "DELETE":
            gone = store.delete(plural, namespace, name)
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {"name": name, "kind": plural, "uid": gone["metadata"]["uid"]},
                }
            )
        if request.method not in ("PUT", "PATCH"):
            raise ApiFailure(405, "MethodNotAllowed", f"{request.method} is not allowed here")
        patch_type = request.content_type
        applying = request.method == "PATCH" and patch_type == "application/apply-patch+yaml"
        if applying and (plural, namespace, name) not in store.objects:  # apply creates
            return _json(store.create(plural, namespace, await _body(request)), 201)
        current = store.get(plural, namespace, name)
        if self._conflicts[plural] > 0:
            self._conflicts[plural] -= 1
            store.touch(plural, namespace, name)
            raise conflict(kind, name)
        if request.method == "PUT":
            new = await _body(request)
        else:
            base = _scale(current) if sub == "scale" else copy.deepcopy(current)
            new = apply_patch(base, patch_type, await request.read())
        new.setdefault("metadata", {})["name"] = name
        if sub == "scale":
            sent = new["metadata"].get("resourceVersion")
            new, replicas = copy.deepcopy(current), (new.get("spec") or {}).get("replicas", 0)
            new["spec"]["replicas"] = replicas
            new["metadata"]["resourceVersion"] = sent
            return _json(_scale(store.update(plural, namespace, new)))
        return _json(store.update(plural, namespace, new, part=sub or "main"))

    async def _watch(
        self,
        request: web.Request,
        kind: Kind,
        namespace: str | None,
        labels: str | None,
        fields: str | None,
    ) -> web.StreamResponse:
        store, query = self.store, request.query
        match = matcher(kind, labels, fields)
        timeout = _number(query, "timeoutSeconds") or WATCH_TIMEOUT
        deadline = asyncio.get_running_loop().time() + timeout
        since = _number(query, "resourceVersion")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)

        async def send(type_: str, obj: Obj) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        if since == 0:  # the current state first, as ADDED
            position = store.rv
            for obj in store.select(kind.plural, namespace, labels=labels, fields=fields):
                await send("ADDED", copy.deepcopy(obj))
        elif since < store.oldest:
            gone = ApiFailure(410, "Expired", f"too old resource version: {since}")
            await send("ERROR", gone.status())
            return response
        else:
            position = since
        while True:
            tick = store.tick
            start = bisect.bisect_right(store.log, position, key=lambda c: c.rv)
            for change in store.log[start:]:
                position = change.rv
                ours = change.plural == kind.plural and namespace in (None, change.namespace)
                if ours and match(change.object):
                    await send(change.type, change.object)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0 or request.transport is None or request.transport.is_closing():
                break
            try:
                async with asyncio.timeout(remaining):
                    await tick.wait()
            except TimeoutError:
                break
        with contextlib.suppress(ConnectionResetError):  # the client left first: nothing to end
            await response.write_eof()
        return response


def _number(query: Any, name: str) -> int:
    """A whole-number query parameter (0 when absent)."""
    text = query.get(name) or "0"
    if not text.isdigit():
        raise ApiFailure(400, "BadRequest", f"{name} must be a whole number, not {text!r}")
    return int(text)


async def _body(request: web.Request) -> Obj:
    try:
        body = await request.json()
    except ValueError as exc:
        raise ApiFailure(400, "BadRequest", f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ApiFailure(400, "BadRequest", "the body is not an object")
    return body


@contextmanager
def running_emulator(directory: Path) -> Iterator[KubeEmulator]:
    """A started emulator with its kubeconfig in ``directory`` (``kubeconfig_path``)."""
    emulator = KubeEmulator()
    emulator.start()
    emulator.kubeconfig(directory / "kubeconfig")
    try:
        yield emulator
    finally:
        emulator.close()


def _json(obj: Obj, status: int = 200) -> web.Response:
    # Exactly application/json (no charset): lightkube only makes an ApiError of that.
    return web.Response(
        body=json.dumps(obj).encode(), status=status, headers={"Content-Type": "application/json"}
    )


def _scale(dep: Obj) -> Obj:
    labels = dep["spec"]["selector"].get("matchLabels") or {}
    meta = dep["metadata"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": dep["spec"].get("replicas", 1)},
        "status": {
            "replicas": (dep.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
        },
    }


NOT_FOUND = ApiFailure(404, "NotFound", "the server could not find the requested resource")
VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0-emulated",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def _discovery_root(which: str, url: str) -> Obj:
    address = [{"clientCIDR": "0.0.0.0/0", "serverAddress": url.removeprefix("http://")}]
    if which == "api":
        return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": address}
    groups = sorted({(k.group, k.version) for k in KINDS.values() if k.group})
    return {
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": [
            {
                "name": group,
                "versions": [{"groupVersion": f"{group}/{version}", "version": version}],
                "preferredVersion": {"groupVersion": f"{group}/{version}", "version": version},
            }
            for group, version in groups
        ],
    }


def _resource_list(group: str, version: str) -> Obj:
    kinds = [k for k in KINDS.values() if (k.group, k.version) == (group, version)]
    if not kinds:
        raise NOT_FOUND
    verbs = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
    resources: list[Obj] = []
    for k in kinds:
        resources.append(
            {
                "name": k.plural,
                "singularName": k.kind.lower(),
                "namespaced": True,
                "kind": k.kind,
                "verbs": verbs,
            }
        )
        if k.status:
            resources.append(
                {
                    "name": f"{k.plural}/status",
                    "namespaced": True,
                    "kind": k.kind,
                    "verbs": ["get", "patch", "update"],
                }
            )
        if k.scale:
            resources.append(
                {
                    "name": f"{k.plural}/scale",
                    "namespaced": True,
                    "kind": "Scale",
                    "group": "autoscaling",
                    "version": "v1",
                    "verbs": ["get", "patch", "update"],
                }
            )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/{version}" if group else version,
        "resources": resources,
    }
