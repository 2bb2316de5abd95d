"""Mounts every domain's routers.

Each domain package may define in its ``endpoints.py`` any of: ``admin`` (mounted at
``/api/admin/v1``, staff auth), ``store`` (``/api/store/v1``, the mini-program), ``events``
(``/api/events/v1``) and ``provider`` (``/api/pay``, provider callbacks). Packages are found
by walking ``siyu``, so adding a domain needs no edit here.
"""

from __future__ import annotations

import importlib
import pkgutil

from fastapi import APIRouter, FastAPI

import siyu

PREFIXES = {
    "admin": "/api/admin/v1",
    "store": "/api/store/v1",
    "events": "/api/events/v1",
    "provider": "/api/pay",
}


def domain_packages() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.endpoints") is not None:
            names.append(info.name)
    return sorted(names)


def include_all(app: FastAPI) -> None:
    for name in domain_packages():
        module = importlib.import_module(f"siyu.{name}.endpoints")
        for attr, prefix in PREFIXES.items():
            router = getattr(module, attr, None)
            if isinstance(router, APIRouter):
                app.include_router(router, prefix=prefix)


def import_all_models() -> None:
    """Import every ``models.py`` so ``Base.metadata`` knows every table (Alembic, tests)."""
    importlib.import_module("siyu.kit.outbox")
    importlib.import_module("siyu.kit.audit")
    for info in pkgutil.iter_modules(siyu.__path__):
        if info.ispkg and importlib.util.find_spec(f"siyu.{info.name}.models") is not None:
            importlib.import_module(f"siyu.{info.name}.models")
