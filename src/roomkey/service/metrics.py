"""Prometheus metrics, one registry per :class:`~roomkey.service.runtime.Service`.

A private :class:`~prometheus_client.CollectorRegistry` (not the global one) keeps several
services in one process (tests, the demo) apart. Other parts add their own collectors with
``registry=service.metrics.registry``.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class Metrics:
    """The service's own counters and gauges."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.lockme_webhooks = Counter(
            "roomkey_lockme_webhooks",
            "Lockme webhook deliveries by outcome (stored, duplicate, bad_request, not_found).",
            ["outcome"],
            registry=r,
        )
        self.messages_processed = Counter(
            "roomkey_lockme_messages_processed",
            "Lockme messages handled by the worker, by action and outcome.",
            ["action", "outcome"],
            registry=r,
        )
        self.message_backlog = Gauge(
            "roomkey_lockme_message_backlog",
            "Lockme messages stored but not yet marked read, by state.",
            ["state"],
            registry=r,
        )
        self.door_actions_changed = Counter(
            "roomkey_door_actions_changed",
            "Door actions created, updated or superseded by replanning.",
            ["change"],
            registry=r,
        )
        self.reconcile_runs = Counter(
            "roomkey_reconcile_runs",
            "Reconciliation passes by outcome (done, skipped_lease, failed).",
            ["outcome"],
            registry=r,
        )
        self.reconcile_healed = Counter(
            "roomkey_reconcile_healed",
            "Reservations healed by reconciliation (added, changed, deleted).",
            ["change"],
            registry=r,
        )
        self.worker_failures = Counter(
            "roomkey_worker_failures",
            "Worker passes that raised (the worker is restarted with backoff).",
            ["worker"],
            registry=r,
        )

    def render(self) -> bytes:
        """The text exposition format (content type :data:`CONTENT_TYPE_LATEST`)."""
        return generate_latest(self.registry)
