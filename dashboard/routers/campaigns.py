"""The Campaigns page: see docs/dashboard.md#campaigns for what each number means."""

from __future__ import annotations

from dashboard import queries
from dashboard.routers.common import page_router

router = page_router("campaigns", "Campaigns", queries.campaigns)
