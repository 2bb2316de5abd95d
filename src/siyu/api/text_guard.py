"""Refuses text holding a NUL character (U+0000) before any endpoint sees it.

PostgreSQL cannot store U+0000 in text and SQLite can, so without this the same request was
stored on one database and refused on the other (by the ``DataError`` safety net, after the
service had run). Here it is one answer on both: 422 ``validation_error`` with a field
``text_nul_character`` per offending value, its path as Pydantic would name it (``body.a.0.b``,
``query.q``, ``path``), nothing changed.

A route that judges each item of a batch on its own (event ingestion: a bad event is rejected
with its reason, the rest stored) is exempt and checks NUL itself (``exempt``).

Cost: a JSON body is buffered (FastAPI reads it whole anyway) and scanned for the escape
``\\u0000`` (a raw NUL byte is not valid JSON); only a body holding that escape is parsed here,
to tell a real NUL from an escaped backslash followed by ``u0000``. The query string is scanned
for ``%00``; the decoded path for a NUL.
"""

from __future__ import annotations

import contextlib
import json
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from siyu.api.problems import problem_response
from siyu.kit.errors import DomainError, FieldError
from siyu.kit.i18n import pick_language
from siyu.kit.nul_text import ESCAPE, nul_paths
from siyu.kit.validation_messages import field_message

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return False


class NulTextGuard:
    def __init__(self, app: ASGIApp, exempt: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.exempt = exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        paths: list[str] = []
        if "\x00" in scope.get("path", ""):
            paths.append("path")
        query = scope.get("query_string", b"")
        if b"%00" in query:
            pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
            paths += [f"query.{k}" for k, v in pairs if "\x00" in k or "\x00" in v]
        if scope["method"] in _BODY_METHODS and _is_json(scope):
            body, replay = await _buffer(receive)
            receive = replay
            if ESCAPE in body:
                with contextlib.suppress(ValueError):  # not JSON: the endpoint answers malformed_body
                    paths += nul_paths(json.loads(body), "body")
        if not paths:
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        lang = pick_language(request.headers.get("accept-language"))
        fields = [FieldError(path=p, code="text_nul_character", message=field_message("text_nul_character", lang))
                  for p in paths]
        response = problem_response(request, DomainError("validation_error", fields=fields))
        await response(scope, receive, send)


async def _buffer(receive: Receive) -> tuple[bytes, Receive]:
    """The whole request body, and a ``receive`` that hands it on once, then the real one's
    messages (a disconnect)."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: let the app see it
            pending: list[Message] = [message]
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            pending = []
            break
    body = b"".join(chunks)
    first: list[Message] = pending or [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if first:
            return first.pop()
        return await receive()

    return body, replay
