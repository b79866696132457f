"""The program definition (YAML -> pydantic): event types, rewards, tiers, campaigns, audiences,
journeys, webhooks and destinations. Applied with `loyalty config apply program.yaml` to the
compacted `program.config` topic; every processor and ingest read it as a global table.

Each section belongs to one component; keep a component's options in its own model here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.topics import RETRY_TIERS

RESERVED_EVENT_TYPES = ("PURCHASE", "REGISTRATION")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EventType(Model):
    """A behaviour event type. `tracking` types bypass the loyalty processor."""

    name: str = Field(pattern=r"^[A-Z][A-Z0-9_]*$")
    path: Literal["loyalty", "tracking"] = "loyalty"
    description: str = ""
    schema_: dict[str, Any] = Field(default_factory=lambda: {"type": "object"}, alias="schema")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Reward(Model):
    id: str
    name: str = ""
    kind: Literal["points", "other"] = "points"
    expires_after_days: int | None = Field(default=None, gt=0)


class Tier(Model):
    id: str
    name: str
    level: int = Field(ge=0)
    entry: str = "true"  # CEL over `profile` (lifetime_points, period_purchases, ...)
    multiplier: float = 1.0


class Tiers(Model):
    levels: list[Tier] = Field(default_factory=list)
    reporting_period_days: int = Field(default=365, gt=0)


class PunchCard(Model):
    punches: int = Field(gt=0)


class Streak(Model):
    period: Literal["day", "week"] = "day"
    length: int = Field(gt=1)


class Referral(Model):
    referrer_points: float = 0
    referee_points: float = 0


class Coupon(Model):
    codes: list[str] = Field(default_factory=list)
    single_use: Literal["per_customer", "global"] = "per_customer"


class CampaignWebhook(Model):
    """A webhook reaction: when the campaign fires, POST `payload` (a template) to the named
    webhook (`webhooks[].id`) through delivery, as `{"event": event, "data": payload}`."""

    endpoint: str  # webhooks[].id
    event: str = Field(default="CAMPAIGN_WEBHOOK", pattern=r"^[A-Z][A-Z0-9_]*$")
    # strings "{{ CEL }}" are replaced by the value (whole string) or its text (inside one)
    payload: dict[str, Any] = Field(default_factory=dict)


class CampaignLimits(Model):
    """Caps per customer per calendar period (UTC, on the event's `issued_at`; ISO weeks start
    Monday): how many times one customer may be rewarded, counted as `per_customer_limit`."""

    per_customer_per_day: int | None = Field(default=None, gt=0)
    per_customer_per_week: int | None = Field(default=None, gt=0)
    per_customer_per_month: int | None = Field(default=None, gt=0)


class Campaign(Model):
    id: str
    name: str = ""
    kind: Literal["behavior", "punch_card", "streak", "referral", "coupon"] = "behavior"
    triggers: list[str] = Field(default_factory=lambda: ["PURCHASE"])
    condition: str = "true"  # CEL over `properties`, `event`, `profile`
    formula: str = "0"  # CEL giving the amount of `reward_id`
    reward_id: str = "POINTS"
    tier_multipliers: bool = True
    start: str | None = None  # ISO 8601
    end: str | None = None
    budget: float | None = None  # total amount, kept exactly over partitions (campaigns.budgets)
    per_customer_limit: int | None = None
    limits: CampaignLimits = Field(default_factory=CampaignLimits)  # per-period caps
    enabled: bool = True
    punch_card: PunchCard | None = None
    streak: Streak | None = None
    referral: Referral | None = None
    coupon: Coupon | None = None
    award_badge: str | None = None  # badges[].id awarded when the campaign fires
    webhook: CampaignWebhook | None = None  # a webhook reaction when the campaign fires


# -- badges and achievements (processors/loyalty/badges.py) ------------------------------------
class Badge(Model):
    id: str = Field(min_length=1, max_length=64)
    name: str = ""
    description: str = ""
    image_url: str = ""


class Achievement(Model):
    """A goal over matching events: `target` events (or the sum of `sum`, a CEL number over
    the event) within `period_days` (rolling; None = ever). Completing it awards `badge_id`."""

    id: str = Field(min_length=1, max_length=64)
    name: str = ""
    triggers: list[str] = Field(min_length=1)
    condition: str = "true"  # CEL over `properties`, `event`, `profile`, as campaigns
    sum: str | None = None  # CEL giving the amount an event adds; None: each event adds 1
    target: float = Field(gt=0)
    period_days: int | None = Field(default=None, gt=0)
    repeatable: bool = False  # completed again (badge awarded again) after each completion
    badge_id: str
    notify_progress: bool = False  # an ACHIEVEMENT_PROGRESS webhook on each step
    enabled: bool = True


class Trait(Model):
    name: str
    expression: str  # CEL over `profile`


class Rfm(Model):
    """Score boundaries (ascending) for 1..5 scores; recency in days (lower is better)."""

    recency_days: list[float] = Field(default_factory=lambda: [7, 30, 90, 180])
    frequency: list[float] = Field(default_factory=lambda: [2, 5, 10, 20])
    monetary: list[float] = Field(default_factory=lambda: [50, 200, 500, 1000])


class Scheduled(Model):
    """Internal events produced by timers so campaigns can reward them."""

    birthday: bool = False
    anniversary: bool = False
    inactivity_days: int | None = None


class Audience(Model):
    id: str
    name: str = ""
    condition: str | None = None  # CEL over `profile`
    members: list[str] = Field(default_factory=list)  # static list


class JourneyNode(Model):
    id: str
    kind: Literal["start", "wait", "action", "end"]
    action: Literal["email", "push", "webhook", "destination"] | None = None
    template: str = ""
    target: str | None = None  # webhook/destination id for those actions


class JourneyEdge(Model):
    from_: str = Field(alias="from")
    to: str
    event_type: str | None = None  # None: a timed edge taken after `wait_minutes`
    condition: str = "true"  # CEL over `event` and `profile`
    wait_minutes: float = Field(default=0, ge=0)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Journey(Model):
    id: str
    name: str = ""
    entry_event: str | None = None
    entry_audience: str | None = None
    reentry: Literal["never", "after_exit", "always"] = "after_exit"
    exit_events: list[str] = Field(default_factory=list)
    # an instance entered from `entry_audience` exits (EXIT, reason audience_leave:<id>) when
    # the customer leaves that audience
    exit_on_audience_leave: bool = True
    nodes: list[JourneyNode]
    edges: list[JourneyEdge] = Field(default_factory=list)
    enabled: bool = True


class LeaderboardMetric(Model):
    """What a leaderboard scores (docs/loyalty.md, "Leaderboards"): `points` (POINTS earned),
    `reward_units` (units of `reward_id` earned) or `event_count` (accepted events of
    `event_type` whose CEL `condition` over `event` and `properties` holds)."""

    kind: Literal["points", "reward_units", "event_count"]
    reward_id: str | None = None  # reward_units: required; points: POINTS
    event_type: str | None = None  # event_count: required
    condition: str = "true"

    @model_validator(mode="after")
    def _check_kind(self) -> LeaderboardMetric:
        if self.kind == "reward_units" and not self.reward_id:
            raise ValueError("metric reward_units needs reward_id")
        if self.kind == "event_count" and not self.event_type:
            raise ValueError("metric event_count needs event_type")
        return self


class Leaderboard(Model):
    """A ranking of customers by a metric over the current week (ISO, Monday 00:00 UTC),
    month (UTC) or all time, optionally among an audience's members."""

    id: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    name: str = ""
    metric: LeaderboardMetric
    period: Literal["week", "month", "all_time"] = "all_time"
    audience: str | None = None
    consent_purpose: str = "leaderboards"  # a customer whose consent says false is left out


class Webhook(Model):
    id: str
    url: str
    events: list[str]
    secret: str = ""
    previous_secrets: list[str] = Field(default_factory=list)  # signatures during rotation
    enabled: bool = True


class Destination(Model):
    id: str
    kind: Literal["http"] = "http"
    url: str
    events: list[str] = Field(default_factory=list)  # event types and audience ids; empty = all
    secret: str = ""
    batch_size: int = Field(default=100, gt=0)
    linger_ms: int = Field(default=1000, ge=0)
    enabled: bool = True


class Delivery(Model):
    timeout_s: float = Field(default=10, gt=0)
    retry_tiers: list[str] = Field(default_factory=lambda: list(RETRY_TIERS))
    allow_http_hosts: list[str] = Field(default_factory=lambda: ["127.0.0.1", "localhost", "::1"])
    allow_private: bool = False
    max_concurrency_per_endpoint: int = Field(default=8, gt=0)


class Notices(Model):
    """Webhooks before a customer loses something (processors/loyalty/notices.py). Off (None)
    by default: they are messages to customers a program opts into, and turning them on for an
    existing program must not start sending them unasked."""

    points_expiring_days: int | None = Field(default=None, gt=0)  # POINTS_EXPIRING, days before
    tier_downgrade_warning_days: int | None = Field(default=None, gt=0)  # before the period ends


class Retention(Model):
    """How long per-event records live in processor state. 120 days outlasts the usual return
    windows (30-90 days) plus payment disputes, so returns can still be reversed, while the
    `events` store stays bounded (docs/loyalty.md, "Retention")."""

    events_days: int = Field(default=120, gt=0)


class Fulfilment(Model):
    """Events sent with `fulfilled: false` (reservations): how long one waits for its fulfil
    before it expires (EXPIRED, its reserved rewards released). Masivo's default is 24 hours;
    an event's own `reserve` (days) overrides it. Fractions of an hour are allowed."""

    expire_after_hours: float = Field(default=24, gt=0, le=24 * 3650)


class Program(Model):
    version: int = 0  # assigned by `loyalty config apply`
    name: str = "program"
    rounding: Literal["floor", "round", "ceil"] = "floor"
    event_types: list[EventType] = Field(default_factory=list, validate_default=True)
    rewards: list[Reward] = Field(default_factory=lambda: [Reward(id="POINTS", name="Points")])
    tiers: Tiers = Field(default_factory=Tiers)
    campaigns: list[Campaign] = Field(default_factory=list)
    traits: list[Trait] = Field(default_factory=list)
    rfm: Rfm = Field(default_factory=Rfm)
    scheduled: Scheduled = Field(default_factory=Scheduled)
    audiences: list[Audience] = Field(default_factory=list)
    journeys: list[Journey] = Field(default_factory=list)
    webhooks: list[Webhook] = Field(default_factory=list)
    destinations: list[Destination] = Field(default_factory=list)
    delivery: Delivery = Field(default_factory=Delivery)
    retention: Retention = Field(default_factory=Retention)
    notices: Notices = Field(default_factory=Notices)
    fulfilment: Fulfilment = Field(default_factory=Fulfilment)
    badges: list[Badge] = Field(default_factory=list)
    achievements: list[Achievement] = Field(default_factory=list)
    leaderboards: list[Leaderboard] = Field(default_factory=list)

    @field_validator("event_types")
    @classmethod
    def _add_reserved_types(cls, types: list[EventType]) -> list[EventType]:
        names = {t.name for t in types}
        if len(names) != len(types):
            raise ValueError("event type names must be unique")
        extra = [EventType(name=n) for n in RESERVED_EVENT_TYPES if n not in names]
        return extra + types

    @model_validator(mode="after")
    def _check_references(self) -> Program:
        rewards = {r.id for r in self.rewards}
        for c in self.campaigns:
            if c.reward_id not in rewards:
                raise ValueError(f"campaign {c.id}: unknown reward_id {c.reward_id!r}")
        self._check_badges()
        self._check_leaderboards()
        warn = self.notices.tier_downgrade_warning_days
        if warn is not None and warn >= self.tiers.reporting_period_days:
            raise ValueError(
                f"notices.tier_downgrade_warning_days ({warn}) must be less than "
                f"tiers.reporting_period_days ({self.tiers.reporting_period_days})"
            )
        return self

    def _check_leaderboards(self) -> None:
        ids = [b.id for b in self.leaderboards]
        if len(set(ids)) != len(ids):
            raise ValueError("leaderboard ids must be unique")
        rewards = {r.id for r in self.rewards}
        audiences = {a.id for a in self.audiences}
        for b in self.leaderboards:
            if b.metric.reward_id and b.metric.reward_id not in rewards:
                raise ValueError(f"leaderboard {b.id}: unknown reward_id {b.metric.reward_id!r}")
            if b.audience and b.audience not in audiences:
                raise ValueError(f"leaderboard {b.id}: unknown audience {b.audience!r}")

    def leaderboard(self, board_id: str) -> Leaderboard | None:
        return next((b for b in self.leaderboards if b.id == board_id), None)

    def _check_badges(self) -> None:
        badges = {b.id for b in self.badges}
        if len(badges) != len(self.badges):
            raise ValueError("badge ids must be unique")
        if len({a.id for a in self.achievements}) != len(self.achievements):
            raise ValueError("achievement ids must be unique")
        hooks = {w.id for w in self.webhooks}
        for a in self.achievements:
            if a.badge_id not in badges:
                raise ValueError(f"achievement {a.id}: unknown badge_id {a.badge_id!r}")
        for c in self.campaigns:
            if c.award_badge is not None and c.award_badge not in badges:
                raise ValueError(f"campaign {c.id}: unknown award_badge {c.award_badge!r}")
            if c.webhook is not None and c.webhook.endpoint not in hooks:
                raise ValueError(f"campaign {c.id}: unknown webhook endpoint {c.webhook.endpoint!r}")

    def event_type(self, name: str) -> EventType | None:
        return next((t for t in self.event_types if t.name == name), None)


    def badge(self, badge_id: str) -> Badge | None:
        return next((b for b in self.badges if b.id == badge_id), None)


def load_program(path: str | Path) -> Program:
    """Read and validate a program YAML file (raises pydantic.ValidationError)."""
    return Program.model_validate(yaml.safe_load(Path(path).read_text()) or {})
