"""The browser dashboard over the sink's PostgreSQL tables (docs/dashboard.md)."""
