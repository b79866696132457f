"""The Overview page: see docs/dashboard.md#overview for what each number means."""

from __future__ import annotations

from dashboard import queries
from dashboard.routers.common import page_router

router = page_router("overview", "Overview", queries.overview)
