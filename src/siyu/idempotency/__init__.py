"""Idempotency-Key for the admin API's creates: the stored first answer of each keyed request.

``models`` (the ``idempotent_requests`` table), ``repository`` (its queries), ``service`` (key
rules, claim, replay, retention) and ``tasks`` (the purge job). The FastAPI side, a decorator an
endpoint opts in with, is ``siyu.api.idempotency``.
"""
