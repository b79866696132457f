"""Journeys: per-customer node graphs driven by events, audiences and durable waits."""
