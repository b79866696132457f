"""Leaderboards: per-board, per-period scores kept by the sink, and the counts ranks read.

`leaderboard_scores` holds one row per (board, period start, customer) with the score and
whether the customer may be shown (`eligible`: not anonymous, identified, the board's consent
purpose not false, a member of the board's audience if it has one), kept by the sink when the
score, the customer or the membership changes (sinks/tables.py). A partial index on (board,
period, score DESC, customer_id) WHERE eligible makes a top N one index range scan.

A rank is 1 + the number of eligible customers with a higher score. Counting up to 1M index
entries per request would miss the 50 ms budget, so a trigger keeps
`leaderboard_score_counts` (eligible customers per distinct score) and a rank sums the counts
of the higher scores: as many rows as there are distinct scores above the customer's.

Revision ID: 0007_leaderboards
Revises: 0006_history_indexes
Create Date: 2026-12-02
"""

from alembic import op

revision = "0007_leaderboards"
down_revision = "0006_history_indexes"
branch_labels = None
depends_on = None

UP = """
CREATE TABLE leaderboard_scores (
    board_id text NOT NULL,
    period_start date NOT NULL,
    customer_id text NOT NULL,
    score double precision NOT NULL DEFAULT 0,
    eligible boolean NOT NULL DEFAULT true,
    audience_id text,
    consent_purpose text NOT NULL DEFAULT 'leaderboards',
    updated_at timestamptz,
    PRIMARY KEY (board_id, period_start, customer_id)
);
CREATE INDEX leaderboard_scores_rank ON leaderboard_scores
    (board_id, period_start, score DESC, customer_id) WHERE eligible;
CREATE INDEX leaderboard_scores_customer ON leaderboard_scores (customer_id);

CREATE TABLE leaderboard_score_counts (
    board_id text NOT NULL,
    period_start date NOT NULL,
    score double precision NOT NULL,
    n bigint NOT NULL,
    PRIMARY KEY (board_id, period_start, score)
);

CREATE FUNCTION leaderboard_eligible(cid text, audience text, purpose text) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT NOT EXISTS (
        SELECT 1 FROM customers c WHERE c.customer_id = cid
        AND (c.anonymous IS TRUE OR c.identified IS FALSE OR c.consent->>purpose = 'false'))
    AND (audience IS NULL OR EXISTS (
        SELECT 1 FROM audience_members m WHERE m.audience_id = audience AND m.customer_id = cid))
$$;

CREATE FUNCTION leaderboard_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.eligible = NEW.eligible AND OLD.score = NEW.score THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.eligible THEN
        UPDATE leaderboard_score_counts SET n = n - 1
        WHERE board_id = OLD.board_id AND period_start = OLD.period_start AND score = OLD.score;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.eligible THEN
        INSERT INTO leaderboard_score_counts AS k VALUES (NEW.board_id, NEW.period_start, NEW.score, 1)
        ON CONFLICT (board_id, period_start, score) DO UPDATE SET n = k.n + 1;
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER leaderboard_scores_count AFTER INSERT OR UPDATE OR DELETE ON leaderboard_scores
    FOR EACH ROW EXECUTE FUNCTION leaderboard_count();
"""

DOWN = """
DROP TABLE IF EXISTS leaderboard_scores, leaderboard_score_counts;
DROP FUNCTION IF EXISTS leaderboard_count(), leaderboard_eligible(text, text, text);
"""


def upgrade() -> None:
    op.execute(UP)


def downgrade() -> None:
    op.execute(DOWN)
