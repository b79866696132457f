"""Service plumbing every service shares: JSON logs, the health/metrics server and shared
metrics, Kafka client helpers, topic admin and the program config table.

It sits between the contracts (`schemas/`) and the stream kit (`processors/runtime/`): it
imports only `schemas/`, and ingest, the sink and the dashboard use it without the stream kit.
"""
