"""What one engine call produces: the new state and everything the processor writes with it in
one transaction (results, notifications, profile, timers, re-keyed commands, event records)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Output:
    state: dict[str, Any]
    results: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    profile: dict[str, Any] | None = None
    timers: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    commands: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    credited: list[dict[str, Any]] = field(default_factory=list)  # accumulation lines
