"""Sink tables, offsets and analytics views.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TABLES = """
CREATE TABLE sink_offsets (
    topic text NOT NULL,
    partition int NOT NULL,
    next_offset bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition)
);

CREATE TABLE events (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    type text NOT NULL,
    kind text NOT NULL DEFAULT 'EVENT',
    path text,
    reference text,
    brand_id text,
    status text NOT NULL DEFAULT 'PENDING',
    reason text,
    points double precision,
    result jsonb,
    properties jsonb,
    tags jsonb,
    metadata jsonb,
    fulfilled boolean,
    target_event_id text,
    issued_at timestamptz,
    received_at timestamptz,
    processed_at timestamptz,
    config_version int
);
CREATE INDEX events_customer_issued ON events (customer_id, issued_at);
CREATE INDEX events_type_issued ON events (type, issued_at);
CREATE INDEX events_target ON events (target_event_id) WHERE target_event_id IS NOT NULL;

CREATE TABLE ledger_lines (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    event_id text,
    kind text,
    reward_id text,
    campaign_id text,
    rule text,
    amount double precision NOT NULL DEFAULT 0,
    issued_at timestamptz,
    expiration_date timestamptz,
    processed_at timestamptz,
    line jsonb
);
CREATE INDEX ledger_lines_customer ON ledger_lines (customer_id, issued_at);
CREATE INDEX ledger_lines_event ON ledger_lines (event_id);

CREATE TABLE wallets (
    customer_id text PRIMARY KEY,
    points double precision NOT NULL DEFAULT 0,
    lifetime double precision NOT NULL DEFAULT 0,
    pending double precision NOT NULL DEFAULT 0,
    balance jsonb,
    wallet jsonb,
    tier text,
    event_id text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE customers (
    customer_id text PRIMARY KEY,
    anonymous boolean,
    identified boolean,
    tier text,
    tags jsonb,
    consent jsonb,
    purchase_count double precision,
    total_spend double precision,
    last_purchase_at timestamptz,
    event_count double precision,
    last_event_at timestamptz,
    first_seen timestamptz,
    lifetime_points double precision,
    points double precision,
    birthday text,
    registered_at timestamptz,
    rfm_recency double precision,
    rfm_frequency double precision,
    rfm_monetary double precision,
    rfm_score text,
    events_by_type jsonb,
    traits jsonb,
    profile jsonb,
    config_version int,
    updated_at timestamptz NOT NULL
);

CREATE TABLE tier_changes (
    id text PRIMARY KEY,
    customer_id text NOT NULL,
    direction text NOT NULL,
    from_tier text,
    to_tier text,
    changed_at timestamptz NOT NULL,
    data jsonb
);
CREATE INDEX tier_changes_customer ON tier_changes (customer_id, changed_at);

CREATE TABLE notifications (
    id text PRIMARY KEY,
    event text NOT NULL,
    customer_id text NOT NULL,
    data jsonb,
    created_at timestamptz NOT NULL,
    config_version int
);

CREATE TABLE audience_members (
    audience_id text NOT NULL,
    customer_id text NOT NULL,
    entered_at timestamptz NOT NULL,
    reason text,
    config_version int,
    PRIMARY KEY (audience_id, customer_id)
);

CREATE TABLE audience_membership_events (
    id text PRIMARY KEY,
    audience_id text NOT NULL,
    customer_id text NOT NULL,
    action text NOT NULL,
    reason text,
    at timestamptz NOT NULL,
    config_version int
);
CREATE INDEX audience_membership_events_aud ON audience_membership_events (audience_id, at);

CREATE TABLE journey_instances (
    instance_id text PRIMARY KEY,
    journey_id text NOT NULL,
    customer_id text NOT NULL,
    status text NOT NULL DEFAULT 'ACTIVE',
    current_node text,
    trigger_event_id text,
    entered_at timestamptz,
    ended_at timestamptz,
    updated_at timestamptz NOT NULL
);
CREATE INDEX journey_instances_journey ON journey_instances (journey_id, status);

CREATE TABLE journey_transitions (
    id text PRIMARY KEY,
    journey_id text NOT NULL,
    instance_id text NOT NULL,
    customer_id text NOT NULL,
    kind text NOT NULL,
    from_node text,
    to_node text,
    action text,
    trigger_event_id text,
    at timestamptz NOT NULL,
    config_version int,
    data jsonb
);
CREATE INDEX journey_transitions_instance ON journey_transitions (instance_id, at);

CREATE TABLE webhook_deliveries (
    webhook_id text NOT NULL,
    endpoint_id text NOT NULL,
    attempt int NOT NULL,
    event text NOT NULL,
    customer_id text NOT NULL,
    status_code int,
    latency_ms double precision,
    outcome text NOT NULL,
    error text,
    at timestamptz NOT NULL,
    PRIMARY KEY (webhook_id, endpoint_id, attempt)
);

CREATE TABLE dlq (
    id text NOT NULL,
    endpoint_id text NOT NULL DEFAULT '',
    event text NOT NULL,
    customer_id text NOT NULL,
    data jsonb,
    created_at timestamptz NOT NULL,
    attempt int,
    last_error text,
    config_version int,
    dead_at timestamptz,
    PRIMARY KEY (id, endpoint_id)
);
"""

VIEWS = """
CREATE VIEW v_events_per_customer AS
SELECT customer_id,
       count(*) AS events,
       count(DISTINCT type) AS event_types,
       min(issued_at) AS first_event_at,
       max(issued_at) AS last_event_at
FROM events WHERE kind = 'EVENT'
GROUP BY customer_id;

CREATE VIEW v_events_by_type AS
SELECT type, path,
       count(*) AS events,
       count(DISTINCT customer_id) AS customers,
       min(issued_at) AS first_event_at,
       max(issued_at) AS last_event_at
FROM events WHERE kind = 'EVENT'
GROUP BY type, path;

CREATE VIEW v_points_per_event_type AS
SELECT type,
       count(*) FILTER (WHERE status = 'RESOLVED') AS resolved_events,
       coalesce(sum(points) FILTER (WHERE status = 'RESOLVED'), 0) AS points,
       coalesce(avg(points) FILTER (WHERE status = 'RESOLVED'), 0) AS avg_points
FROM events WHERE kind = 'EVENT' AND path = 'loyalty'
GROUP BY type;

CREATE VIEW v_event_frequency AS
SELECT customer_id,
       count(*) AS events,
       count(*) FILTER (WHERE issued_at >= now() - interval '7 days') AS events_7d,
       count(*) FILTER (WHERE issued_at >= now() - interval '30 days') AS events_30d,
       count(*) FILTER (WHERE issued_at >= now() - interval '90 days') AS events_90d,
       count(*) / greatest(1, extract(epoch FROM max(issued_at) - min(issued_at)) / 86400.0)
           AS events_per_day,
       max(issued_at) AS last_event_at
FROM events WHERE kind = 'EVENT'
GROUP BY customer_id;

CREATE VIEW v_behavior_segments AS
SELECT customer_id,
       count(*) FILTER (WHERE issued_at >= now() - interval '30 days') >= 10 AS high_engager,
       bool_or(type = 'PURCHASE' AND status IN ('RESOLVED', 'PENDING')) AS purchaser,
       bool_or(type LIKE '%REFERRAL%' OR type LIKE '%REVIEW%') AS advocate,
       max(issued_at) < now() - interval '30 days' AS at_risk,
       max(issued_at) AS last_event_at
FROM events WHERE kind = 'EVENT'
GROUP BY customer_id;

CREATE VIEW v_segment_members AS
SELECT customer_id, 'high_engager' AS segment FROM v_behavior_segments WHERE high_engager
UNION ALL SELECT customer_id, 'purchaser' FROM v_behavior_segments WHERE purchaser
UNION ALL SELECT customer_id, 'advocate' FROM v_behavior_segments WHERE advocate
UNION ALL SELECT customer_id, 'at_risk' FROM v_behavior_segments WHERE at_risk;
"""

DROP = """
DROP VIEW IF EXISTS v_segment_members, v_behavior_segments, v_event_frequency,
    v_points_per_event_type, v_events_by_type, v_events_per_customer;
DROP TABLE IF EXISTS dlq, webhook_deliveries, journey_transitions, journey_instances,
    audience_membership_events, audience_members, notifications, tier_changes, customers,
    wallets, ledger_lines, events, sink_offsets;
"""


def upgrade() -> None:
    op.execute(TABLES)
    op.execute(VIEWS)


def downgrade() -> None:
    op.execute(DROP)
