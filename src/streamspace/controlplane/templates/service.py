"""The default catalog: applications that ship in Debian and run on the local platform."""

from __future__ import annotations

from typing import Any

from sqlalchemy.exc import IntegrityError

from streamspace.db.engine import SessionFactory
from streamspace.db.models import Template
from streamspace.db.repo import templates as template_repo

DEFAULT_TEMPLATES: tuple[dict[str, Any], ...] = (
    {
        "name": "xterm",
        "display_name": "Terminal (xterm)",
        "description": "A plain X terminal with a shell.",
        "command": ["xterm", "-maximized"],
    },
    {
        "name": "xedit",
        "display_name": "Text editor (xedit)",
        "description": "A simple text editor; files in its home are kept between sessions.",
        "command": ["xedit"],
        "persistent_home": True,
    },
    {
        "name": "xcalc",
        "display_name": "Calculator (xcalc)",
        "description": "A scientific calculator.",
        "command": ["xcalc"],
    },
)
_FIELD_DEFAULTS: dict[str, Any] = {
    "image": "",
    "vnc_port": 5900,
    "resources": {},
    "env": {},
    "platform": None,
    "persistent_home": False,
    "network": "none",  # none of the defaults needs the network: an X terminal or editor
}


async def ensure_default_templates(db: SessionFactory) -> None:
    """Fill an empty catalog with the defaults (an admin's edits are never overwritten)."""
    try:
        async with db() as session, session.begin():
            if await template_repo.count(session):
                return
            for fields in DEFAULT_TEMPLATES:
                session.add(Template(**(_FIELD_DEFAULTS | fields)))
    except IntegrityError:
        pass  # another replica filled it at the same moment
