"""The emulated API server's object store: resourceVersion, uid, generation, conflicts, the
event log that watches read, selectors and patches. Everything here runs on the emulator's
event loop; the HTTP layer (:mod:`tests.k8s.emulator`) and the controllers call it."""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """One resource type the emulator serves."""

    group: str
    version: str
    plural: str
    kind: str
    status: bool = False  # has a /status subresource (status only written through it)
    scale: bool = False  # has a /scale subresource
    fields: tuple[str, ...] = ()  # field selectors beyond metadata.name/namespace

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


KINDS = {
    kind.plural: kind
    for kind in (
        Kind("", "v1", "pods", "Pod", status=True, fields=("status.phase", "spec.nodeName")),
        Kind("", "v1", "services", "Service", status=True),
        Kind("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", status=True),
        Kind("", "v1", "secrets", "Secret"),
        Kind("", "v1", "configmaps", "ConfigMap"),
        Kind(
            "",
            "v1",
            "events",
            "Event",
            fields=("involvedObject.kind", "involvedObject.name", "involvedObject.uid", "reason"),
        ),
        Kind("apps", "v1", "deployments", "Deployment", status=True, scale=True),
        Kind("coordination.k8s.io", "v1", "leases", "Lease"),
    )
}

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_PART = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


class ApiFailure(Exception):
    """An answer of ``kind: Status`` with an HTTP error code."""

    def __init__(self, code: int, reason: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details

    def status(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Change:
    """One entry of the event log that watches replay."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    plural: str
    namespace: str
    object: Obj


class Store:
    """All objects, keyed by (plural, namespace, name), and the log of their changes."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.rv = 0
        self.log: list[Change] = []
        self.oldest = 0  # watches from before this resourceVersion get 410 Gone
        self.listeners: list[Callable[[Change], None]] = []
        self.tick = asyncio.Event()

    # --- reads --------------------------------------------------------------------------

    def get(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.objects.get((plural, namespace, name))
        if obj is None:
            raise not_found(plural, name)
        return obj

    def select(
        self,
        plural: str,
        namespace: str | None,
        *,
        labels: str | None = None,
        fields: str | None = None,
    ) -> list[Obj]:
        match = matcher(KINDS[plural], labels, fields)
        return [
            obj
            for (p, ns, _), obj in sorted(self.objects.items())
            if p == plural and namespace in (None, ns) and match(obj)
        ]

    # --- writes -------------------------------------------------------------------------

    def create(self, plural: str, namespace: str, body: Obj) -> Obj:
        kind = KINDS[plural]
        meta = body.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        validate(kind, body)
        name = meta["name"]
        if (plural, namespace, name) in self.objects:
            raise ApiFailure(
                409,
                "AlreadyExists",
                f'{resource(kind)} "{name}" already exists',
                name=name,
                group=kind.group,
                kind=plural,
            )
        body.update(kind=kind.kind, apiVersion=kind.api_version)
        meta.update(
            namespace=namespace,
            uid=str(uuid.uuid4()),
            creationTimestamp=now(),
            generation=1,
        )
        if kind.status:
            body.pop("status", None)  # as the real server: status only through /status
        return self._write("ADDED", plural, namespace, body)

    def update(self, plural: str, namespace: str, new: Obj, *, part: str = "main") -> Obj:
        """Write ``new`` over the stored object: ``part`` "main" keeps the stored status,
        "status" keeps everything but the status. A stale resourceVersion is a 409."""
        kind = KINDS[plural]
        name = new.get("metadata", {}).get("name", "")
        old = self.get(plural, namespace, name)
        sent = new["metadata"].get("resourceVersion")
        if sent and sent != old["metadata"]["resourceVersion"]:
            raise conflict(kind, name)
        validate(kind, new)
        if part == "status":
            merged = copy.deepcopy(old)
            merged["status"] = new.get("status", {})
        else:
            merged = new
            if kind.status:
                merged["status"] = copy.deepcopy(old.get("status", {}))
            for key in ("uid", "creationTimestamp", "namespace", "generation"):
                merged["metadata"][key] = old["metadata"][key]
            if merged.get("spec") != old.get("spec"):
                merged["metadata"]["generation"] += 1
        merged.update(kind=kind.kind, apiVersion=kind.api_version)
        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
        if merged == old:
            return old  # a no-op write changes no resourceVersion (as the real server)
        return self._write("MODIFIED", plural, namespace, merged)

    def delete(self, plural: str, namespace: str, name: str) -> Obj:
        obj = self.objects.pop((plural, namespace, name), None)
        if obj is None:
            raise not_found(plural, name)
        self.rv += 1
        gone = copy.deepcopy(obj)
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._emit(Change(self.rv, "DELETED", plural, namespace, gone))
        return gone

    def touch(self, plural: str, namespace: str, name: str) -> None:
        """Another writer changed the object (its resourceVersion moves)."""
        obj = copy.deepcopy(self.get(plural, namespace, name))
        obj["metadata"].setdefault("annotations", {})["emulator/touched"] = str(self.rv + 1)
        self._write("MODIFIED", plural, namespace, obj)

    def compact(self) -> None:
        """Forget the event log: a watch resuming from before now gets 410 Gone."""
        self.log.clear()
        self.oldest = self.rv

    def _write(self, type_: str, plural: str, namespace: str, obj: Obj) -> Obj:
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[(plural, namespace, obj["metadata"]["name"])] = obj
        self._emit(Change(self.rv, type_, plural, namespace, copy.deepcopy(obj)))
        return obj

    def _emit(self, change: Change) -> None:
        self.log.append(change)
        self.wake()
        for listener in self.listeners:
            listener(change)

    def wake(self) -> None:
        """Wake every watch (to send what changed, or to notice its connection was cut)."""
        tick, self.tick = self.tick, asyncio.Event()
        tick.set()


def resource(kind: Kind) -> str:
    return f"{kind.plural}.{kind.group}" if kind.group else kind.plural


def not_found(plural: str, name: str) -> ApiFailure:
    kind = KINDS[plural]
    return ApiFailure(
        404, "NotFound", f'{resource(kind)} "{name}" not found', name=name, kind=plural
    )


def conflict(kind: Kind, name: str) -> ApiFailure:
    return ApiFailure(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {resource(kind)} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        name=name,
        group=kind.group,
        kind=kind.plural,
    )


def invalid(kind: Kind, name: str, field: str, message: str) -> ApiFailure:
    return ApiFailure(
        422,
        "Invalid",
        f'{kind.kind} "{name}" is invalid: {field}: {message}',
        name=name,
        kind=kind.kind,
    )


def validate(kind: Kind, obj: Obj) -> None:
    """The checks of the real server that a platform's bug would trip: names, labels, and a
    Deployment's selector against its pod template."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    pattern, limit = (_DNS_LABEL, 63) if kind.plural == "services" else (_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        raise invalid(kind, name, "metadata.name", f'Invalid value: "{name}"')
    check_labels(kind, name, "metadata.labels", meta.get("labels") or {})
    if kind.plural == "deployments":
        spec = obj.get("spec") or {}
        template = (spec.get("template") or {}).get("metadata") or {}
        check_labels(kind, name, "spec.template.metadata.labels", template.get("labels") or {})
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        have = template.get("labels") or {}
        if not wanted or any(have.get(k) != v for k, v in wanted.items()):
            raise invalid(
                kind, name, "spec.template.metadata.labels", "selector does not match template"
            )
        if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
            raise invalid(kind, name, "spec.template.spec.containers", "Required value")


def check_labels(kind: Kind, name: str, field: str, labels: dict[str, Any]) -> None:
    for key, value in labels.items():
        prefix, _, part = key.rpartition("/")
        good_key = _LABEL_PART.match(part) and len(part) <= 63
        good_key = good_key and (not prefix or (_SUBDOMAIN.match(prefix) and len(prefix) <= 253))
        good_value = isinstance(value, str) and (
            value == "" or (_LABEL_PART.match(value) and len(value) <= 63)
        )
        if not (good_key and good_value):
            raise invalid(kind, name, field, f'Invalid value: "{key}={value}"')


# --- selectors ----------------------------------------------------------------------------

_REQUIREMENT = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|!=|=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s(?P<set>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split(selector: str) -> list[str]:
    """Split on the commas outside ``in (a, b)``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current.strip() else parts


def label_matcher(selector: str | None) -> Callable[[dict[str, str]], bool]:
    tests: list[Callable[[dict[str, str]], bool]] = []
    for text in _split(selector or ""):
        m = _REQUIREMENT.match(text)
        if m is None or (m["neg"] and (m["op"] or m["set"])):
            raise ApiFailure(400, "BadRequest", f"unable to parse requirement: {text!r}")
        key, value, op = m["key"], m["value"], m["op"] or m["set"]
        values = {v.strip() for v in (m["values"] or "").split(",")}
        if m["neg"]:
            tests.append(lambda labels, k=key: k not in labels)
        elif op in ("=", "=="):
            tests.append(lambda labels, k=key, v=value: labels.get(k) == v)
        elif op == "!=":
            tests.append(lambda labels, k=key, v=value: labels.get(k) != v)
        elif op == "in":
            tests.append(lambda labels, k=key, vs=values: labels.get(k) in vs)
        elif op == "notin":
            tests.append(lambda labels, k=key, vs=values: labels.get(k) not in vs)
        else:
            tests.append(lambda labels, k=key: k in labels)
    return lambda labels: all(test(labels) for test in tests)


def field_value(obj: Obj, path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matcher(kind: Kind, labels: str | None, fields: str | None) -> Callable[[Obj], bool]:
    by_labels = label_matcher(labels)
    tests: list[Callable[[Obj], bool]] = []
    for text in _split(fields or ""):
        m = re.match(r"^\s*([A-Za-z.]+)\s*(==|!=|=)\s*(.*?)\s*$", text)
        allowed = ("metadata.name", "metadata.namespace", *kind.fields)
        if m is None or m[1] not in allowed:
            raise ApiFailure(400, "BadRequest", f'"{text.strip()}" is not a known field selector')
        path, op, value = m[1], m[2], m[3]
        same = op != "!="
        tests.append(lambda obj, p=path, v=value, s=same: (field_value(obj, p) == v) == s)
    return lambda obj: (
        by_labels(obj["metadata"].get("labels") or {}) and all(test(obj) for test in tests)
    )


# --- patches ------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 (strategic merge patch is served the same way: lists are replaced)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue  # strategic-merge directives
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def json_patch(target: Obj, operations: list[Obj]) -> Obj:
    """RFC 6902."""
    doc = copy.deepcopy(target)
    for op in operations:
        path = _pointer(op.get("path", ""))
        if op.get("op") in ("move", "copy"):
            value = _resolve(doc, _pointer(op["from"]))
            if op["op"] == "move":
                _remove(doc, _pointer(op["from"]))
            _add(doc, path, copy.deepcopy(value))
        elif op.get("op") == "add":
            _add(doc, path, op["value"])
        elif op.get("op") == "remove":
            _remove(doc, path)
        elif op.get("op") == "replace":
            _remove(doc, path)
            _add(doc, path, op["value"])
        elif op.get("op") == "test":
            if _resolve(doc, path) != op["value"]:
                raise ApiFailure(422, "Invalid", f"the test of {op['path']} failed")
        else:
            raise ApiFailure(400, "BadRequest", f"unknown JSON patch operation {op!r}")
    return doc


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _resolve(doc: Any, path: list[str]) -> Any:
    try:
        for part in path:
            doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    except (KeyError, IndexError, ValueError) as exc:
        raise ApiFailure(422, "Invalid", f"no path /{'/'.join(path)}") from exc
    return doc


def _add(doc: Any, path: list[str], value: Any) -> None:
    parent = _resolve(doc, path[:-1])
    if isinstance(parent, list):
        parent.insert(len(parent) if path[-1] == "-" else int(path[-1]), value)
    else:
        parent[path[-1]] = value


def _remove(doc: Any, path: list[str]) -> None:
    parent = _resolve(doc, path[:-1])
    _resolve(doc, path)
    del parent[int(path[-1]) if isinstance(parent, list) else path[-1]]


def apply_patch(obj: Obj, content_type: str, body: bytes) -> Obj:
    try:
        patch = json.loads(body)
    except ValueError as exc:
        raise ApiFailure(400, "BadRequest", f"the patch is not JSON: {exc}") from exc
    if content_type == "application/json-patch+json":
        if not isinstance(patch, list):
            raise ApiFailure(400, "BadRequest", "a JSON patch is a list of operations")
        return json_patch(obj, patch)
    if content_type in (
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ):
        if not isinstance(patch, dict):
            raise ApiFailure(400, "BadRequest", "a merge patch is an object")
        result: Obj = merge_patch(obj, patch)
        return result
    raise ApiFailure(415, "UnsupportedMediaType", f"the patch type {content_type} is unknown")
