"""Deliberate breaks of roomkey's guarantees, for showing that the suites catch them.

Nothing here is reachable from product code: the switches are applied by the harness, by
monkeypatching roomkey's modules in the test process or in a ``roomkey serve`` / ``roomkey
demo`` process started through :mod:`harness.sabotaged_serve`. Select with
``ROOMKEY_SABOTAGE=name[,name...]``:

``mark_read_before_commit``
    the Lockme message worker marks a message read at Lockme *before* committing its effect.
``resend_maybe_sent``
    on start, commands a killed process left ``sending`` (the request may have left) are put
    back to ``pending`` and sent again — a blind retry after a maybe-sent request.
``retry_maybe_delivered``
    a send that may have been delivered (dropped connection, timeout after writing) is
    treated as certainly not sent, so the executor tries again.
``skip_claim``
    row claims ignore other replicas' claims (every replica may take the same work), and
    the executor's compare-and-set on pending→sending is skipped with them.
``skip_claim_only``
    only the row claims are skipped (the compare-and-set guards stay).
``log_secret``
    redaction is off and the service logs its Lockme client secret at start.
``receiver_500``
    the Lockme webhook receiver crashes (HTTP 500) on a message id it cannot parse, after
    storing it half-way.
``plain_secrets``
    secrets at rest are stored in clear (the SecretBox encrypts nothing).
``no_constant_time``
    webhook secrets are compared with ``==``.
"""

from __future__ import annotations

import logging
from typing import Any

from harness.modes import sabotaged

log = logging.getLogger("roomkey.sabotage")


def apply_all() -> list[str]:
    """Apply every sabotage named in ``ROOMKEY_SABOTAGE``; returns their names."""
    done = []
    for name, patch in _PATCHES.items():
        if sabotaged(name):
            patch()
            done.append(name)
    return done


def _mark_read_before_commit() -> None:
    from roomkey.service import messages as m

    async def process(self: Any, message_id: str, *, claimed: Any = None, **_: Any) -> Any:
        service = self.service
        step = "load"
        try:
            held = claimed if claimed is not None else await self._load(message_id)
            if held is None:
                return m.MessageOutcome(message_id, m.MessageState.ACKED)
            raw = held.raw
            fetched = raw is None
            if raw is None:
                step = "fetch"
                message = await service.lockme.get_message(message_id)
                raw = message.model_dump(mode="json", exclude_none=True)
            step = "mark_read"  # SABOTAGE: read at Lockme before the effect is committed
            await service.lockme.mark_message_read(message_id)
            if not held.applied:
                step = "apply"
                rooms = await self._apply(
                    message_id, m.Message.model_validate(raw), raw=raw if fetched else None
                )
            else:
                rooms = frozenset()
            await self._acked(message_id)
        except Exception as exc:
            return await self._failed(message_id, step, exc)
        return m.MessageOutcome(message_id, m.MessageState.ACKED, held.action, rooms)

    m.MessageWorker.process = process  # type: ignore[method-assign]


def _resend_maybe_sent() -> None:
    from sqlalchemy import update

    from roomkey.service import executor as ex
    from roomkey.service.db.models import Command, CommandState

    original = ex.Executor.seed_lock_states

    async def seed_lock_states(self: Any) -> None:
        if not self._seeded:
            async with self.ctx.sessions() as session, session.begin():
                await session.execute(
                    update(Command)
                    .where(Command.state == CommandState.SENDING)
                    .values(state=CommandState.PENDING, claim_owner=None, claim_until=None)
                )
        await original(self)

    ex.Executor.seed_lock_states = seed_lock_states  # type: ignore[method-assign]


def _retry_maybe_delivered() -> None:
    from roomkey.service import commands as lc
    from roomkey.service import executor as ex

    original = lc.on_send_outcome

    def on_send_outcome(command: Any, result: Any, **kwargs: Any) -> Any:
        if result is lc.SendResult.MAYBE_DELIVERED:
            result = lc.SendResult.NOT_SENT
        return original(command, result, **kwargs)

    lc.on_send_outcome = on_send_outcome
    ex.lc = lc  # the executor reads it through the module


def _skip_claim() -> None:
    """Claims are skipped: every replica takes every due row, and (since roomkey's state
    changes are also compare-and-set, a second line of defence that alone already stops
    double sends) the executor's pending→sending step is made unconditional too."""
    from sqlalchemy import true

    from roomkey.service import executor as ex
    from roomkey.service.db import claims
    from roomkey.service.db.models import CommandState

    claims.claim_is_free = lambda model, now: true()  # type: ignore[assignment]
    original = ex.persist_transition

    async def persist_transition(session: Any, before: Any, after: Any, **kwargs: Any) -> bool:
        if after.state.value == CommandState.SENDING.value:
            await original(session, before, after, **kwargs)
            return True  # SABOTAGE: "I hold it" without checking
        return bool(await original(session, before, after, **kwargs))

    ex.persist_transition = persist_transition  # type: ignore[assignment]


def _skip_claim_only() -> None:
    from sqlalchemy import true

    from roomkey.service.db import claims

    claims.claim_is_free = lambda model, now: true()  # type: ignore[assignment]


def _log_secret() -> None:
    from roomkey.service import logging as rlog
    from roomkey.service import runtime

    rlog.redact = lambda text, extra=(): text  # type: ignore[assignment]
    original = runtime.Service.start

    async def start(self: Any, **kwargs: Any) -> None:
        await original(self, **kwargs)
        logging.getLogger("roomkey.service.runtime").info(
            "lockme client secret is %s", self.config.lockme.client_secret.get_secret_value()
        )

    runtime.Service.start = start  # type: ignore[method-assign]


def _receiver_500() -> None:
    from roomkey.service import hooks_lockme, messages

    original = messages.record_delivery

    async def record_delivery(service: Any, message_id: str) -> bool:
        new = await original(service, message_id)
        if not message_id.isdigit():
            raise RuntimeError("cannot parse message id")  # stored, then a 500
        return new

    messages.record_delivery = record_delivery
    if hasattr(hooks_lockme, "record_delivery"):
        hooks_lockme.record_delivery = record_delivery


def _plain_secrets() -> None:
    from roomkey.service import crypto

    crypto.SecretBox.encrypt = lambda self, text: text  # type: ignore[assignment,method-assign]
    crypto.SecretBox.decrypt = lambda self, text: text  # type: ignore[assignment,method-assign]


def _no_constant_time() -> None:
    """roomkey's secret checks compare with ``==`` instead of ``hmac.compare_digest``."""
    from roomkey.loqed import events
    from roomkey.service import hooks_lockme, hooks_loqed
    from roomkey.web import auth, pages, sessions

    def equal(given: Any, expected: Any) -> bool:
        return bool(given) and bool(expected) and given == expected

    hooks_lockme.secret_matches = lambda given, expected: equal(given, expected)
    hooks_loqed._secret_matches = lambda given, expected: equal(given, expected)
    for module in (sessions, auth, pages):
        if hasattr(module, "csrf_matches"):
            module.csrf_matches = lambda expected, given: equal(given, expected)

    class _PlainHmac:
        """``hmac`` for the LOQED webhook verifier, with ``==`` as compare_digest."""

        def __getattr__(self, name: str) -> Any:
            import hmac

            return getattr(hmac, name)

        @staticmethod
        def compare_digest(a: Any, b: Any) -> bool:
            return bool(a == b)

    events.hmac = _PlainHmac()  # type: ignore[assignment]


_PATCHES = {
    "mark_read_before_commit": _mark_read_before_commit,
    "resend_maybe_sent": _resend_maybe_sent,
    "retry_maybe_delivered": _retry_maybe_delivered,
    "skip_claim": _skip_claim,
    "skip_claim_only": _skip_claim_only,
    "log_secret": _log_secret,
    "receiver_500": _receiver_500,
    "plain_secrets": _plain_secrets,
    "no_constant_time": _no_constant_time,
}
