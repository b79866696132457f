"""`loyalty backtest` over a recorded history: the loyalty engine's records for a few customers
written by the sink into a migrated PostgreSQL (and the events produced to events.loyalty),
replayed through the published program and a proposed one. An unchanged program reports zero
differences and matches the ledger; a doubled formula reports exactly double."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psycopg
import pytest
import yaml
from confluent_kafka import Producer

from deploy.cli import main
from plumbing.config_table import publish_program
from schemas.codec import encode
from schemas.program import Program
from schemas.settings import Settings
from schemas.topics import EVENTS_LOYALTY, topic_name
from sinks.batch import Batch
from sinks.mapping import Source
from sinks.writer import write_batch
from tests.integration.test_sink_every_kind import DAY, MINUTE, NOW, Pipeline

pytestmark = pytest.mark.integration
PROGRAM = {
    "rewards": [{"id": "POINTS", "name": "Points", "expires_after_days": 30}],
    "campaigns": [
        {"id": "base", "condition": "properties.amount > 0", "formula": "properties.amount",
         "budget": 100000, "tier_multipliers": False},
        {"id": "big", "condition": "properties.amount >= 100", "formula": "25", "tier_multipliers": False},
    ],
    "tiers": {"levels": [
        {"id": "bronze", "name": "Bronze", "level": 0},
        {"id": "silver", "name": "Silver", "level": 1, "entry": "profile.lifetime_points >= 300",
         "multiplier": 1.5}]},  # multipliers off in the campaigns: doubling stays exact
}  # fmt: skip
UNTIL = datetime.fromtimestamp((NOW + 10 * DAY) / 1000, UTC).isoformat()


@pytest.fixture
def recorded(cfg: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A recorded history in the sink's tables and on events.loyalty; program.config holds
    PROGRAM (the current program). Returns a JSON-lines copy of the events."""
    pipeline = Pipeline(Program.model_validate({**PROGRAM, "version": 1}))
    for day in range(3):
        for n, amount in enumerate((40, 120, 75, 10, 260)):
            pipeline.send(f"c{n}", "PURCHASE", properties={"amount": amount + day})
            pipeline.advance(MINUTE)
        pipeline.advance(DAY)
    offsets: dict[str, int] = defaultdict(int)
    batch = Batch()
    for topic, value in pipeline.records:
        batch.add(value, Source(topic, 0, offsets[topic]), topic)
        offsets[topic] += 1
    with psycopg.connect(cfg.database_url) as conn:  # the module's database: written once
        if not conn.execute("SELECT count(*) FROM events").fetchone()[0]:
            assert not write_batch(conn, batch, {}).rejects
    events = [v for t, v in pipeline.records if t == EVENTS_LOYALTY]
    producer = Producer({"bootstrap.servers": cfg.kafka_bootstrap_servers})
    for event in events:
        producer.produce(topic_name(EVENTS_LOYALTY, cfg), encode("Event", event), event["customer_id"])
    assert producer.flush(30) == 0
    publish_program(cfg, Program.model_validate(PROGRAM))
    monkeypatch.setenv("DATABASE_URL", cfg.database_url)
    lines = tmp_path / "events.jsonl"
    lines.write_bytes(b"\n".join(orjson.dumps(e) for e in events))
    return lines


def backtest(tmp_path: Path, capsys: pytest.CaptureFixture, program: dict, *flags: str) -> dict:
    proposed = tmp_path / "proposed.yaml"
    proposed.write_text(yaml.safe_dump(program))
    capsys.readouterr()
    code = main(["backtest", "--program", str(proposed), "--since", "30d", "--until", UNTIL,
                 "--partitions", "1", "--json", *flags])  # fmt: skip
    out = capsys.readouterr()
    assert code == 0, out.err
    return orjson.loads(out.out)


def by_campaign(result: dict) -> dict[str, dict]:
    return {r["campaign_id"]: r for r in result["campaigns"]}


def test_an_unchanged_program_reports_zero_differences(recorded, tmp_path, capsys):
    result = backtest(tmp_path, capsys, PROGRAM, "--source", "table")
    assert result["source"] == "table" and result["events"] == 15 and result["customers"] == 5
    assert result["differences"] == 0
    rows = by_campaign(result)
    for cid in ("base", "big"):
        row = rows[cid]
        assert row["before"] == row["after"] == row["actual"] > 0, row
        assert row["customers_affected"] == 0
    assert (
        rows["base"]["budget"] == 100000
        and rows["base"]["budget_used_after"] == rows["base"]["after"] / 100000
    )
    tiers = result["tiers"]
    assert tiers["changes_before"] == tiers["changes_after"] and tiers["changes_before"]["TIER_UPGRADE"] > 0
    assert tiers["customers_with_another_tier"] == 0


def test_a_doubled_formula_reports_exactly_double(recorded, tmp_path, capsys):
    doubled = {**PROGRAM, "campaigns": [{**PROGRAM["campaigns"][0], "formula": "properties.amount * 2"},
                                        PROGRAM["campaigns"][1]]}  # fmt: skip
    result = backtest(tmp_path, capsys, doubled, "--source", "table")
    rows = by_campaign(result)
    assert (
        rows["base"]["after"] == 2 * rows["base"]["before"]
        and rows["base"]["before"] == rows["base"]["actual"]
    )
    assert rows["big"]["after"] == rows["big"]["before"]  # a flat 25 stays 25
    assert rows["base"]["customers_affected"] == 5 and rows["big"]["customers_affected"] == 0
    assert result["differences"] == 1
    # customers earn faster: more of them reach silver within the window
    assert (
        result["tiers"]["changes_after"]["TIER_UPGRADE"] > result["tiers"]["changes_before"]["TIER_UPGRADE"]
    )
    assert result["tiers"]["customers_with_another_tier"] > 0


def test_the_topic_and_a_file_replay_the_same(recorded, tmp_path, capsys):
    table = backtest(tmp_path, capsys, PROGRAM, "--source", "table")
    auto = backtest(tmp_path, capsys, PROGRAM)  # the topic holds everything since the window start
    from_file = backtest(tmp_path, capsys, PROGRAM, "--source", str(recorded))
    assert auto["source"] == "topic" and from_file["source"] == str(recorded)
    for other in (auto, from_file):
        assert other["events"] == table["events"]
        for cid, row in by_campaign(table).items():
            assert by_campaign(other)[cid]["after"] == row["after"]
    assert from_file["campaigns"][0]["actual"] is None  # a file has no ledger to compare with


def test_the_readable_table(recorded, tmp_path, capsys):
    proposed = tmp_path / "p.yaml"
    proposed.write_text(yaml.safe_dump(PROGRAM))
    assert main(["backtest", "--program", str(proposed), "--until", UNTIL, "--partitions", "1",
                 "--source", "table"]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "base" in text and "budget used after" in text and "15 events of 5 customers" in text
    assert "0 campaigns differ" in text


def test_bad_input_names_what_is_wrong(recorded, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**PROGRAM, "campaigns": [{"id": "x", "formula": "properties.amount *"}]}))
    assert main(["backtest", "--program", str(bad), "--source", "table"]) == 1
    assert "invalid rules" in capsys.readouterr().err
    good = tmp_path / "good.yaml"
    good.write_text(yaml.safe_dump(PROGRAM))
    assert main(["backtest", "--program", str(good), "--source", "nowhere.jsonl"]) == 1
    assert "--source 'nowhere.jsonl'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["backtest", "--program", str(bad), "--since", "soon"])
    assert "--since" in capsys.readouterr().err
