"""The members domain's ``admin`` and ``store`` routers.

Route discovery (``siyu.api.routes``) mounts ``siyu.members.endpoints.admin`` / ``.store``; the
domain's routes are spread over several modules by subject (``endpoints``, ``tags_endpoints``,
``records_endpoints``, ``owners_endpoints``, ``channel_endpoints``, ``privacy_endpoints``), each
declaring its routes on these two routers. ``endpoints`` imports every one of them, so they are
all reachable.
"""

from __future__ import annotations

from fastapi import APIRouter

admin = APIRouter(tags=["admin: members"])
store = APIRouter(tags=["store: account"])
