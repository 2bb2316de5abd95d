"""SQL statements and CPU time per referral bind, by the depth of the inviter's chain.

The ring check locks and reads the whole inviter chain (issue 4: no loops, also under parallel
binds); this prints what that costs per bind. SQLite file database; load-insensitive figures
(statement count, process CPU). Run: ``PYTHONPATH=src .venv/bin/python bench/bench_referral_bind.py``.
"""

from __future__ import annotations

import tempfile
import time

from sqlalchemy import event

from siyu.api.routes import import_all_models
from siyu.db.base import Base
from siyu.db.engine import make_engine
from siyu.db.session import make_session_factory, unit_of_work
from siyu.kit.timeutil import utcnow
from siyu.members.models import Member
from siyu.referral import service
from siyu.referral.schemas import SettingsIn
from siyu.tenancy import service as tenancy


def main() -> None:
    import_all_models()
    engine = make_engine(f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite")
    Base.metadata.create_all(engine)
    factory = make_session_factory(engine)
    count = [0]

    def counter(*_: object, **__: object) -> None:
        count[0] += 1

    event.listen(engine, "before_cursor_execute", counter)
    with unit_of_work(factory) as s:
        merchant_id = tenancy.create_merchant(s, code="bench-bind", name="bench").id
        service.put_config(s, merchant_id, SettingsIn(binding_rule="latest"), actor=("system", None))
    for run, depth in enumerate((0, 0, 5, 20, 100)):  # the first run warms imports and caches
        with unit_of_work(factory) as s:
            ids = []
            for i in range(depth + 2):
                member = Member(merchant_id=merchant_id, openid=f"o{run}-{i}", registered_at=utcnow())
                s.add(member)
                s.flush()
                ids.append(member.id)
            codes = [service.ensure_profile(s, merchant_id, x).code for x in ids]
        for i in range(depth):  # a chain ids[1] <- ids[2] <- ... <- ids[depth + 1]
            with unit_of_work(factory) as s:
                service.bind(s, merchant_id, ids[i + 2], codes[i + 1])
        count[0] = 0
        started = time.process_time()
        with unit_of_work(factory) as s:  # measured: bind to the bottom of the chain
            service.bind(s, merchant_id, ids[0], codes[depth + 1] if depth else codes[1])
        cpu_ms = 1000 * (time.process_time() - started)
        if run:
            print(
                f"bind under a chain of depth {depth:>3}: {count[0]:>3} SQL statements, {cpu_ms:.1f} ms CPU"
            )


if __name__ == "__main__":
    main()
