"""One delivery attempt: sign, POST, classify, then record it and move the message on
(delivered, next retry tier, DLQ, or endpoint disabled on 410). Redirects are never followed:
a 3xx goes to the DLQ at once, saying where it pointed."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from processors.delivery import metrics
from processors.delivery.disabled import DisabledTable
from processors.delivery.http import HttpClient, Reply, TransportError
from processors.delivery.policy import (
    Step,
    honours_retry_after,
    is_redirect,
    is_success,
    next_step,
    parse_retry_after,
    shed_step,
    tiers,
)
from processors.delivery.routing import Endpoint, endpoints, request_body
from processors.delivery.urlguard import RefusedTarget, UrlGuard
from processors.delivery.verify import signature_header
from schemas.program import Program
from schemas.topics import DELIVERY_DLQ

log = logging.getLogger(__name__)
USER_AGENT = "loyalty-webhooks/1"
# a secret given as `${NAME}` is resolved here, at send time, from this service's environment:
# the secret itself then never enters program.config, the admin API or its history
SECRET_REF = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class UnresolvedSecret(Exception):
    """A `${NAME}` secret whose variable is not set in the delivery service (a DLQ reason)."""


def resolve_secrets(secrets: tuple[str, ...], env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """Literal secrets as they are, references from `env`; raises UnresolvedSecret naming the
    variable (never a value)."""
    out = []
    for secret in secrets:
        ref = SECRET_REF.match(secret)
        if ref and not env.get(ref[1]):
            raise UnresolvedSecret(f"secret reference ${{{ref[1]}}} is not set in delivery's environment")
        out.append(env[ref[1]] if ref else secret)
    return tuple(out)


class Outbox(Protocol):
    """Where results go: `send` returns once the write is durable (acks=all)."""

    async def send(self, topic: str, key: str, value: dict[str, Any]) -> None: ...

    def record(self, attempt: dict[str, Any]) -> None: ...


class Deliverer:
    """Performs attempts against the current program's endpoints."""

    def __init__(
        self,
        client: HttpClient,
        outbox: Outbox,
        program: Callable[[], Program],
        disabled: DisabledTable,
        guard: UrlGuard | None = None,
        max_retry_after_s: float = 300.0,
    ) -> None:
        self.client = client
        self.max_retry_after_s = max_retry_after_s
        self.outbox = outbox
        self.program = program
        self.disabled = disabled
        self.guard = guard or UrlGuard()

    async def deliver(self, key: str, note: dict[str, Any]) -> str:
        """Attempt one delivery of `note` (already fanned out to endpoint `key`); the outcome."""
        program = self.program()
        ep = _lookup(program, key)
        attempt = note.get("attempt", 0) + 1
        if ep is None:
            return await self._dlq(note, key.split(":", 1)[1], attempt, None, "unknown endpoint")
        if not ep.enabled or self.disabled.is_disabled(ep):
            return await self._finish(ep, note, attempt, "DISABLED", None, 0.0, "endpoint disabled")
        try:
            await self.guard.check(ep.url, program.delivery)
        except RefusedTarget as exc:
            return await self._dlq(note, ep.id, attempt, None, f"refused: {exc}")
        try:
            secrets = resolve_secrets(ep.secrets)
        except UnresolvedSecret as exc:  # permanent until the environment is fixed: DLQ, replayable
            return await self._dlq(note, ep.id, attempt, None, str(exc))
        status, error, retry_after, latency = await self._post(ep, note, program.delivery.timeout_s, secrets)
        metrics.latency(ep.id).observe(latency)
        if is_success(status):
            return await self._finish(ep, note, attempt, "DELIVERED", status, latency, None)
        if is_redirect(status):  # permanent: the configured URL is wrong, retrying cannot help
            return await self._dlq(note, ep.id, attempt, status, error, latency)
        if status == 410:
            self.disabled.disable(ep, "410 Gone")
            log.warning("endpoint disabled after 410", extra={"endpoint": ep.key})
            return await self._finish(ep, note, attempt, "DISABLED", status, latency, "410 Gone")
        tier_list = tiers(program.delivery)
        step = next_step(attempt, tier_list, _now_ms(), retry_after, self.max_retry_after_s)
        return await self._retry(ep, note, attempt, step, status, latency, error)

    async def defer(self, key: str, note: dict[str, Any], came_from: str | None = None) -> None:
        """Move a message without an attempt (its endpoint's queue stayed full too long) to the
        tier after `came_from`, the tier it was read from (policy.shed_step)."""
        step = shed_step(tiers(self.program().delivery), came_from, _now_ms())
        value = {**note, "last_error": "endpoint backlog full"}
        if step.dlq:  # no retry tiers configured
            await self.outbox.send(DELIVERY_DLQ, note["customer_id"], value)
            return
        value["not_before"] = step.not_before_ms
        await self.outbox.send(step.tier.topic, note["customer_id"], value)

    async def _post(
        self, ep: Endpoint, note: dict[str, Any], timeout: float, secrets: tuple[str, ...]
    ) -> tuple[int | None, str | None, float | None, float]:
        body = request_body(note)
        ts = int(time.time())
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": note["id"],
            "webhook-timestamp": str(ts),
        }
        if secrets:
            headers["webhook-signature"] = signature_header(secrets, note["id"], ts, body)
        started = time.perf_counter()
        try:
            resp = await self.client.post(ep.url, body, headers, timeout)
        except TransportError as exc:
            return None, str(exc), None, time.perf_counter() - started
        latency = time.perf_counter() - started
        error = None if is_success(resp.status) else _error(resp)
        after = None
        if honours_retry_after(resp.status):
            after = parse_retry_after(resp.headers.get("retry-after"))
        return resp.status, error, after, latency

    async def _retry(
        self,
        ep: Endpoint,
        note: dict[str, Any],
        attempt: int,
        step: Step,
        status: int | None,
        latency: float,
        error: str | None,
    ) -> str:
        if step.dlq:
            return await self._dlq(note, ep.id, attempt, status, error, latency)
        value = {
            **note,
            "endpoint_id": ep.id,
            "attempt": attempt,
            "not_before": step.not_before_ms,
            "last_error": error,
        }
        await self.outbox.send(step.tier.topic, note["customer_id"], value)
        return await self._finish(ep, note, attempt, "RETRY", status, latency, error)

    async def _dlq(
        self,
        note: dict[str, Any],
        endpoint_id: str,
        attempt: int,
        status: int | None,
        error: str | None,
        latency: float = 0.0,
    ) -> str:
        value = {**note, "endpoint_id": endpoint_id, "attempt": attempt, "last_error": error}
        await self.outbox.send(DELIVERY_DLQ, note["customer_id"], value)
        self._record(endpoint_id, note, attempt, "DLQ", status, latency, error)
        log.warning("delivery dead-lettered", extra={"endpoint": endpoint_id, "error": error})
        return "DLQ"

    async def _finish(
        self,
        ep: Endpoint,
        note: dict[str, Any],
        attempt: int,
        outcome: str,
        status: int | None,
        latency: float,
        error: str | None,
    ) -> str:
        if outcome == "DISABLED":  # keep the message for `loyalty deliveries replay`
            value = {**note, "endpoint_id": ep.id, "attempt": attempt, "last_error": error}
            await self.outbox.send(DELIVERY_DLQ, note["customer_id"], value)
        self._record(ep.id, note, attempt, outcome, status, latency, error)
        return outcome

    def _record(
        self,
        endpoint_id: str,
        note: dict[str, Any],
        attempt: int,
        outcome: str,
        status: int | None,
        latency: float,
        error: str | None,
    ) -> None:
        metrics.attempts(endpoint_id, outcome).inc()
        self.outbox.record(
            {
                "webhook_id": note["id"],
                "endpoint_id": endpoint_id,
                "event": note["event"],
                "customer_id": note["customer_id"],
                "attempt": attempt,
                "status_code": status,
                "latency_ms": round(latency * 1000, 3),
                "outcome": outcome,
                "error": error,
                "at": _now_ms(),
            }
        )


def _error(resp: Reply) -> str:
    if is_redirect(resp.status):
        location = resp.headers.get("location") or "(no location)"
        return f"redirect {resp.status} to {location[:300]} not followed"
    return f"HTTP {resp.status}"


def _lookup(program: Program, key: str) -> Endpoint | None:
    return endpoints(program).get(key)


def _now_ms() -> int:
    return int(time.time() * 1000)
