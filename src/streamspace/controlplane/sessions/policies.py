"""Lifecycle policies: what a session's idle timeout, maximum age and hibernated retention
are, and the reasons the enforcer writes (``docs/policies.md``).

A template's policy field wins; where it is ``None`` the site default (``SESSION_*``
settings) applies. The result is stored on the session at launch, so editing a template
later never surprises the sessions already running.
"""

from __future__ import annotations

from streamspace.config import ApiSettings
from streamspace.db.models import Template
from streamspace.db.repo.sessions import Policy
from streamspace.states import IdleAction, PolicyReason, RetentionHome

_REASON_WORDS = {
    PolicyReason.IDLE: "idle",
    PolicyReason.MAX_AGE: "max age",
    PolicyReason.RETENTION: "hibernated",
}
_UNITS = ((86_400, "d"), (3_600, "h"), (60, "min"))


def effective_policy(
    template: Template, settings: ApiSettings, *, quota_max_age: int | None = None
) -> Policy:
    """The policy a new session of ``template`` gets; its maximum age is the smaller of the
    template's (or the site's) and ``quota_max_age``, the owner's quota (seconds)."""

    def pick(own: float | None, default: float | None, unit: float) -> int | None:
        value = own if own is not None else default
        return None if value is None else seconds(value * unit)

    max_age = pick(template.max_age_minutes, settings.session_max_age_minutes, 60)
    if quota_max_age is not None:
        max_age = quota_max_age if max_age is None else min(max_age, quota_max_age)
    return Policy(
        idle_timeout=pick(template.idle_timeout_minutes, settings.session_idle_timeout_minutes, 60),
        idle_action=IdleAction(template.idle_action or settings.session_idle_action),
        max_age=max_age,
        hibernated_retention=pick(
            template.hibernated_retention_days, settings.session_hibernated_retention_days, 86_400
        ),
        retention_home=RetentionHome(template.retention_home or settings.session_retention_home),
    )


def seconds(value: float) -> int:
    """Whole seconds, at least one (a policy of ``0.001`` minutes still waits a second)."""
    return max(1, round(value))


def duration(total: int) -> str:
    """``30 min``, ``8 h``, ``7 d``: in the largest unit that divides it, else seconds."""
    for size, unit in _UNITS:
        if total >= size and total % size == 0:
            return f"{total // size} {unit}"
    return f"{total} s"


def describe(reason: PolicyReason, total: int) -> str:
    """The reason written for a policy action: ``idle 30 min``, ``max age 8 h``,
    ``hibernated 7 d``."""
    return f"{_REASON_WORDS[reason]} {duration(total)}"
