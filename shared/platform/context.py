"""Who is calling and which request this is, for the duration of one request."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    CLINIC = "clinic"
    PHARMACY = "pharmacy"
    DOCTOR = "doctor"
    PATIENT = "patient"


# Roles that act only once an admin approved them.
ROLES_NEEDING_APPROVAL = frozenset({Role.DOCTOR, Role.CLINIC, Role.PHARMACY})


@dataclass(frozen=True)
class Principal:
    uid: str
    email: str | None
    role: Role
    approved: bool
    session_id: str | None  # None for bearer-token callers
    auth_time: int
    csrf_token: str | None = field(default=None, repr=False, compare=False)

    @property
    def via_cookie(self) -> bool:
        return self.session_id is not None

    @property
    def may_act(self) -> bool:
        return self.approved or self.role not in ROLES_NEEDING_APPROVAL


@dataclass
class RequestContext:
    request_id: str
    function: str
    trace: str | None = None
    span_id: str | None = None
    principal: Principal | None = None

    @property
    def actor(self) -> str:
        return self.principal.uid if self.principal else "anonymous"


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar(
    "alodoktor_request", default=None
)


def current() -> RequestContext | None:
    return _current.get()


def bind(ctx: RequestContext) -> contextvars.Token[RequestContext | None]:
    return _current.set(ctx)


def unbind(token: contextvars.Token[RequestContext | None]) -> None:
    _current.reset(token)
