"""`loyalty backtest`: replay stored events through the current and a proposed program, in
memory, and report per campaign what each would have awarded (and what was actually awarded).

Both programs run the real LoyaltyProcessor (processors/loyalty/replay.py), fed the same events
in the order they were received; nothing is written anywhere. Events come from the
`events.loyalty` topic (the records the processor consumed, complete), or from the sink's
`events` table when the topic's retention does not reach back to --since, or from a JSON-lines
file. Customers start the window new (their state before --since is not replayed) under both
programs alike, so `before` is the current program from the same start, and `actual` (the
ledger_lines of the window) differs from it only by what happened before the window.
"""

from __future__ import annotations

import argparse
import io
import re
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from processors.loyalty.envelope import INTERNAL_KINDS
from processors.loyalty.replay import Replay, Step
from schemas.program import Program
from schemas.settings import Settings

# Commands the processor makes itself (re-keyed referral and coupon hops): replaying them from
# the log would repeat what the replay regenerates under each program.
TIER_EVENTS = ("TIER_UPGRADE", "TIER_DOWNGRADE")
DURATION = re.compile(r"^(\d+)([smhdw])$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BacktestError(Exception):
    """A backtest that cannot run; the message says why."""


# -- what happened under one program ---------------------------------------------------------------


@dataclass
class Outcome:
    """Awards per campaign and customer, tier changes, and final tiers under one program."""

    awarded: dict[str, dict[str, float]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(float))
    )
    tier_changes: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, step: Step) -> None:
        for res in step.results:
            for line in _detail(res).get("accumulations") or []:
                if line.get("campaign_id"):
                    self.awarded[line["campaign_id"]][res["customer_id"]] += line["amount"]
        for note in step.notifications:
            if note["event"] in TIER_EVENTS:
                self.tier_changes[note["event"]] += 1


def _detail(res: dict[str, Any]) -> dict[str, Any]:
    try:
        body = orjson.loads(res.get("detail") or "{}")
    except orjson.JSONDecodeError:
        return {}
    return body if isinstance(body, dict) else {}


@dataclass
class Run:
    """The two replays side by side over one stream of events."""

    current: Program
    proposed: Program
    start_ms: int
    partitions: int = 1
    events: int = 0
    customers: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.replays = (
            Replay(self.current, self.start_ms, self.partitions, checked=False),
            Replay(self.proposed, self.start_ms, self.partitions, checked=False),
        )
        self.outcomes = (Outcome(), Outcome())

    def feed(self, event: dict[str, Any]) -> None:
        self.events += 1
        self.customers.add(event["customer_id"])
        for replay, outcome in zip(self.replays, self.outcomes, strict=True):
            for step in replay.run(event):
                outcome.add(step)

    def finish(self, until_ms: int) -> None:
        """Fire what came due before the window's end (expiries, tier periods)."""
        for replay, outcome in zip(self.replays, self.outcomes, strict=True):
            outcome.add(replay.advance(until_ms))

    def tiers(self, which: int) -> dict[str, str | None]:
        return {cid: state.get("tier") for cid, state in self.replays[which].customers()}


# -- sources ---------------------------------------------------------------------------------------


def _ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return int((parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp() * 1000)
    raise ValueError(f"not a time: {value!r}")


def _text(value: Any, default: str = "{}") -> str:
    if value is None:
        return default
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def as_event(row: dict[str, Any]) -> dict[str, Any]:
    """An Event record (schemas/avro/event.avsc) from a table row or a JSON line."""
    return {
        "id": str(row["id"]),
        "kind": row.get("kind") or "EVENT",
        "customer_id": row["customer_id"],
        "type": row["type"],
        "path": "loyalty",
        "reference": row.get("reference"),
        "brand_id": row.get("brand_id"),
        "issued_at": _ms(row["issued_at"]),
        "received_at": _ms(row.get("received_at") or row["issued_at"]),
        "properties": _text(row.get("properties")),
        "fulfilled": True if row.get("fulfilled") is None else bool(row["fulfilled"]),
        "reserve": row.get("reserve"),
        "redeem": row.get("redeem") or [],
        "referral_code": row.get("referral_code"),
        "coupon_code": row.get("coupon_code"),
        "tags": row.get("tags") or [],
        "metadata": _text(row.get("metadata")),
        "target_event_id": row.get("target_event_id"),
        "payload": _text(row.get("payload")),
        "reply_to": None,
    }


def replayable(event: dict[str, Any]) -> bool:
    return event.get("path", "loyalty") == "loyalty" and event.get("kind") not in INTERNAL_KINDS


TABLE_SQL = """
SELECT id, kind, customer_id, type, reference, brand_id, issued_at, received_at, properties,
       fulfilled, tags, metadata, target_event_id
FROM events
WHERE path = 'loyalty' AND sends > 0 AND kind <> ALL(%s) AND received_at >= %s AND received_at < %s
ORDER BY received_at, id
"""


def table_events(url: str, since: datetime, until: datetime) -> tuple[int, Iterator[dict[str, Any]]]:
    """(count, events) from the sink's events table, oldest first, streamed (server cursor).
    The table keeps no redemptions, coupon or referral codes nor command payloads: replayed
    from it, those events earn as if they had none (the topic keeps them all)."""
    import psycopg
    from psycopg.rows import dict_row

    args = (sorted(INTERNAL_KINDS), since, until)
    with psycopg.connect(url) as conn:
        count_sql = "SELECT count(*) FROM (" + TABLE_SQL.replace("ORDER BY received_at, id", "") + ") t"
        count = conn.execute(count_sql, args).fetchone()[0]

    def rows() -> Iterator[dict[str, Any]]:
        with psycopg.connect(url) as conn, conn.cursor(name="backtest", row_factory=dict_row) as cur:
            cur.itersize = 5000
            cur.execute(TABLE_SQL, args)
            for row in cur:
                yield as_event(row)

    return count, rows()


def file_events(path: Path, since: datetime, until: datetime) -> tuple[int, Iterator[dict[str, Any]]]:
    """Events from a JSON-lines file (one Event record per line, as the topic carries it;
    properties may be an object, times epoch ms or ISO 8601), sorted by received_at."""
    events = []
    lo, hi = _ms(since), _ms(until)
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                event = as_event(orjson.loads(line))
            except (orjson.JSONDecodeError, KeyError, ValueError, TypeError) as exc:
                raise BacktestError(f"{path}:{n}: not an event record ({exc})") from None
            if replayable(event) and lo <= event["received_at"] < hi:
                events.append(event)
    events.sort(key=lambda e: e["received_at"])
    return len(events), iter(events)


def topic_covers(settings: Settings, since: datetime) -> bool:
    """Whether events.loyalty still holds everything received since `since` (retention)."""
    from confluent_kafka import Consumer, TopicPartition

    from plumbing.kafka_util import partitions_of, watermarks
    from schemas.topics import EVENTS_LOYALTY, topic_name

    topic = topic_name(EVENTS_LOYALTY, settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"backtest-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
        }
    )
    try:
        parts = [TopicPartition(topic, p, _ms(since)) for p in partitions_of(consumer, topic)]
        found = consumer.offsets_for_times(parts, timeout=10)
        for tp in found:
            low, high = watermarks(consumer, TopicPartition(topic, tp.partition))
            if low == 0:  # nothing deleted yet
                continue
            if high > low and (tp.offset < 0 or tp.offset > low):  # records before `since` remain
                continue
            return False
        return True
    finally:
        consumer.close()


def topic_events(
    settings: Settings, since: datetime, until: datetime
) -> tuple[int, Iterator[dict[str, Any]]]:
    """Committed events.loyalty records received in the window, every partition, by time."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    from plumbing.kafka_util import partitions_of, watermarks
    from schemas.codec import default_codec
    from schemas.topics import EVENTS_LOYALTY, topic_name

    topic = topic_name(EVENTS_LOYALTY, settings)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": f"backtest-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "enable.partition.eof": True,
        }
    )
    codec, lo, hi = default_codec(), _ms(since), _ms(until)
    events: list[dict[str, Any]] = []
    try:
        starts = consumer.offsets_for_times(
            [TopicPartition(topic, p, lo) for p in partitions_of(consumer, topic)], timeout=10
        )
        pending = {
            tp.partition
            for tp in starts
            if tp.offset >= 0 and tp.offset < watermarks(consumer, TopicPartition(topic, tp.partition))[1]
        }
        consumer.assign([tp for tp in starts if tp.partition in pending])
        while pending:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise BacktestError(f"reading {topic}: {msg.error()}")
            try:
                event = codec.decode(msg.value(), "Event")
            except Exception:  # noqa: BLE001 - an undecodable record was dead-lettered, not applied
                continue
            if replayable(event) and lo <= event["received_at"] < hi:
                events.append({**event, "reply_to": None})
    finally:
        consumer.close()
    events.sort(key=lambda e: e["received_at"])
    return len(events), iter(events)


def actual_awards(url: str, since: datetime, until: datetime) -> dict[str, tuple[float, int]]:
    """What was really awarded in the window per campaign (ledger_lines): (amount, customers)."""
    import psycopg

    sql = """SELECT campaign_id, sum(amount), count(DISTINCT customer_id) FROM ledger_lines
             WHERE kind = 'ACCUMULATION' AND campaign_id IS NOT NULL AND issued_at >= %s AND issued_at < %s
             GROUP BY campaign_id"""
    with psycopg.connect(url) as conn:
        return {cid: (float(total), int(n)) for cid, total, n in conn.execute(sql, (since, until))}


# -- the report ------------------------------------------------------------------------------------


def report(
    run: Run,
    actual: dict[str, tuple[float, int]] | None,
    elapsed: float,
    source: str,
    since: datetime,
    until: datetime,
) -> dict[str, Any]:
    """Per campaign: awarded before (current program) / after (proposed) / actually, the
    customers whose award changed, budget use; and tier changes under each program."""
    before, after = run.outcomes
    campaigns = {c.id: c for c in run.current.campaigns} | {c.id: c for c in run.proposed.campaigns}
    ids = list(dict.fromkeys([*campaigns, *before.awarded, *after.awarded, *(actual or {})]))
    rows = []
    for cid in ids:
        b, a = before.awarded.get(cid, {}), after.awarded.get(cid, {})
        spec = campaigns.get(cid)
        budget = spec.budget if spec is not None else None
        total_b, total_a = sum(b.values()), sum(a.values())
        rows.append(
            {
                "campaign_id": cid,
                "reward_id": spec.reward_id if spec is not None else None,
                "before": total_b,
                "after": total_a,
                "difference": total_a - total_b,
                "actual": actual.get(cid, (0.0, 0))[0] if actual is not None else None,
                "customers_before": len(b),
                "customers_after": len(a),
                "customers_affected": sum(
                    1 for c in set(b) | set(a) if abs(b.get(c, 0.0) - a.get(c, 0.0)) > 1e-9
                ),
                "budget": budget,
                "budget_used_before": total_b / budget if budget else None,
                "budget_used_after": total_a / budget if budget else None,
            }
        )
    tiers_b, tiers_a = run.tiers(0), run.tiers(1)
    return {
        "source": source,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "current_version": run.current.version,
        "events": run.events,
        "customers": len(run.customers),
        "seconds": round(elapsed, 3),
        "events_per_second": round(run.events / elapsed, 1) if elapsed > 0 else None,
        "campaigns": rows,
        "tiers": {
            "changes_before": dict(before.tier_changes),
            "changes_after": dict(after.tier_changes),
            "customers_with_another_tier": sum(1 for c in tiers_b if tiers_b[c] != tiers_a.get(c)),
        },
        "differences": sum(1 for r in rows if abs(r["difference"]) > 1e-9),
    }


def render(result: dict[str, Any]) -> str:
    """The readable table (rich)."""
    from rich.console import Console
    from rich.table import Table

    def num(value: float | None) -> str:
        return "-" if value is None else f"{value:,.2f}".rstrip("0").rstrip(".")

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.1%}"

    table = Table(title=f"backtest {result['since']} .. {result['until']} ({result['source']})")
    for name in (
        "campaign",
        "reward",
        "before",
        "after",
        "difference",
        "actual",
        "customers affected",
        "budget",
        "budget used before",
        "budget used after",
    ):
        table.add_column(name, justify="left" if name in ("campaign", "reward") else "right")
    for r in result["campaigns"]:
        table.add_row(
            r["campaign_id"],
            r["reward_id"] or "-",
            num(r["before"]),
            num(r["after"]),
            num(r["difference"]),
            num(r["actual"]),
            str(r["customers_affected"]),
            num(r["budget"]),
            pct(r["budget_used_before"]),
            pct(r["budget_used_after"]),
        )
    console = Console(width=160, record=True, file=io.StringIO())  # recorded, exported below
    console.print(table)
    t = result["tiers"]
    console.print(
        f"tier changes: before {t['changes_before'] or 'none'}, after {t['changes_after'] or 'none'}; "
        f"{t['customers_with_another_tier']} customers end in another tier"
    )
    console.print(
        f"{result['events']} events of {result['customers']} customers in {result['seconds']} s "
        f"({result['events_per_second']} events/s); {result['differences']} campaigns differ"
    )
    return console.export_text()


# -- the command -----------------------------------------------------------------------------------


def duration(text: str) -> timedelta:
    m = DURATION.match(text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration such as 30d, 12h, 2w")
    return timedelta(**{UNITS[m[2]]: int(m[1])})


def moment(text: str) -> datetime:
    try:
        return datetime.fromtimestamp(_ms(text) / 1000, UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: an ISO 8601 date-time") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="loyalty backtest", description=__doc__.split("\n\n")[0])
    p.add_argument("--program", required=True, type=Path, help="the proposed program (YAML, as config apply)")
    p.add_argument(
        "--since",
        type=duration,
        default=timedelta(days=30),
        help="window length back from --until (30d, 12h, 2w; default 30d)",
    )
    p.add_argument("--until", type=moment, default=None, help="end of the window (ISO 8601; default now)")
    p.add_argument(
        "--current",
        type=Path,
        default=None,
        help="compare with this program file instead of the published one (program.config)",
    )
    p.add_argument(
        "--source",
        default="auto",
        help="auto (the topic when its retention covers the window, "
        "else the table), topic, table, or a JSON-lines file of event records",
    )
    p.add_argument(
        "--partitions",
        type=int,
        default=None,
        help="partitions the customers are spread over, as in production (default TOPIC_PARTITIONS)",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it shows on a terminal)")
    return p


def events_from(
    source: str, settings: Settings, since: datetime, until: datetime
) -> tuple[str, int, Iterable]:
    if source not in ("auto", "topic", "table"):
        path = Path(source)
        if not path.is_file():
            raise BacktestError(f"--source {source!r}: not auto, topic, table or an existing file")
        return str(path), *file_events(path, since, until)
    if source == "auto":
        source = "topic" if topic_covers(settings, since) else "table"
    if source == "topic":
        return "topic", *topic_events(settings, since, until)
    return "table", *table_events(settings.database_url, since, until)


def backtest(opts: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    from deploy.cli import ProgramFileError, load_program
    from processors.loyalty.validate import rule_errors

    try:
        proposed = load_program(opts.program)
        current = load_program(opts.current) if opts.current else None
    except ProgramFileError as exc:
        raise BacktestError(str(exc)) from None
    for program, path in ((proposed, opts.program), (current, opts.current)):
        if program is not None and (errors := rule_errors(program)):
            raise BacktestError(f"{path}: invalid rules: " + "; ".join(errors))
    if current is None:
        from plumbing.config_table import latest_program

        current = latest_program(settings)
    until = opts.until or datetime.now(UTC)
    since = until - opts.since
    source, count, events = events_from(opts.source, settings, since, until)
    run = Run(current, proposed, int(since.timestamp() * 1000), opts.partitions or settings.partitions)
    started = time.perf_counter()
    with _progress(count, not opts.no_progress and sys.stderr.isatty()) as step:
        for event in events:
            run.feed(event)
            step()
    run.finish(int(until.timestamp() * 1000))
    elapsed = time.perf_counter() - started
    actual = None
    if opts.source in ("auto", "topic", "table") and settings.database_url:
        try:
            actual = actual_awards(settings.database_url, since, until)
        except Exception as exc:  # noqa: BLE001 - the comparison still stands without it
            print(f"loyalty backtest: actual awards unavailable: {exc}", file=sys.stderr)
    return report(run, actual, elapsed, source, since, until)


class _progress:
    """A rich progress bar on stderr when asked and there is something to show."""

    def __init__(self, total: int, shown: bool) -> None:
        self.total, self.shown = total, shown and total > 0

    def __enter__(self) -> Any:
        if not self.shown:
            return lambda: None
        from rich.console import Console
        from rich.progress import Progress

        self.bar = Progress(transient=True, console=Console(stderr=True))
        self.bar.start()
        task = self.bar.add_task("replaying", total=self.total)
        return lambda: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.shown:
            self.bar.stop()


def main(args: list[str]) -> int:
    opts = parser().parse_args(args)
    try:
        result = backtest(opts, Settings.from_env())
    except BacktestError as exc:
        print(f"loyalty backtest: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() if opts.json else render(result))
    return 0
