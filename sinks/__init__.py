"""Kafka -> PostgreSQL sinks, exactly once: rows and consumed offsets commit together.

sink.py (consumer loop) -> batch.py / mapping.py (records -> reduced rows) -> pipeline.py
(writer thread) -> writer.py / tables.py (COPY + upsert + fenced offsets); migrate.py runs
Alembic; service.py is `loyalty sink`. Analysts' guide: docs/analytics.md.
"""
