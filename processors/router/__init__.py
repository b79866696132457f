"""The router: JSON events from events.inbound, checked as ingest checks them, routed as Avro."""
