"""Contracts shared by every component: Avro schemas, the codec, topic names, program config."""
