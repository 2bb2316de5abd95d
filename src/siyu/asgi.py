"""ASGI entry point for multi-process servers: ``uvicorn siyu.asgi:app --workers N``."""

from siyu.app import create_app

app = create_app()
