"""Who is calling and which request this is, for the duration of one request."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Role(StrEnum):
    ADMIN = "admin"
    CLINIC = "clinic"
    PHARMACY = "pharmacy"
    DOCTOR = "doctor"
    PATIENT = "patient"


class Service(StrEnum):
    """Google-run callers that present an OIDC token of their own service account."""

    SCHEDULER = "scheduler"  # Cloud Scheduler jobs: the sweeps and scheduled runs
    TASKS = "tasks"  # Cloud Tasks deliveries: the payout worker


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
    session_expires_at: datetime | None = None  # a cookie session's absolute end

    @property
    def via_cookie(self) -> bool:
        return self.session_id is not None

    @property
    def may_act(self) -> bool:
        return self.approved or self.role not in ROLES_NEEDING_APPROVAL


@dataclass(frozen=True)
class ServicePrincipal:
    """A Google service account acting for one of our `Service`s, never for a person."""

    service: Service
    email: str

    @property
    def uid(self) -> str:
        # What store stamps as `_meta.by` and the audit log shows as the actor.
        return f"service:{self.service.value}"


Caller = Principal | ServicePrincipal


@dataclass
class RequestContext:
    request_id: str
    function: str
    trace: str | None = None
    span_id: str | None = None
    principal: Caller | None = None

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
