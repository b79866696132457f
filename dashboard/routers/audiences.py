"""The Audiences page: see docs/dashboard.md#audiences for what each number means."""

from __future__ import annotations

from dashboard import queries
from dashboard.routers.common import page_router

router = page_router("audiences", "Audiences", queries.audiences)
