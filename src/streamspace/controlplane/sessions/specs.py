"""What an agent is told about a session it starts or wakes."""

from __future__ import annotations

from streamspace.db.models import Session, Template, User
from streamspace.protocol import SessionSpec


def session_spec(session: Session, template: Template, user: User) -> SessionSpec:
    """What an agent needs to start (or wake) the session."""
    return SessionSpec(
        session_id=session.id,
        user=user.username,
        template=template.name,
        image=template.image,
        command=list(template.command),
        env=dict(template.env),
        vnc_port=template.vnc_port,
        resources=dict(template.resources),
        persistent_home=session.persistent_home,
        network=template.network,
    )
