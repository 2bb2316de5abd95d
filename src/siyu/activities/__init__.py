"""What single-SKU activities (group buys 拼团, bargains 砍价) share.

Both are an activity row on one SKU with a window, a stored status (``active → disabled``, the
effective one adds ``scheduled`` / ``ended`` from the clock), stacking settings and a per-member
counter; children started in it (teams, bargains); a store order placed through the checkout
with the activity's option; and the same admin API (list, create, get, patch, disable, delete).

- ``repository``: the shared queries, bound to a module's tables by ``ActivityTables``.
- ``service``: ``ActivityKind`` (error codes, messages, get / disable / delete), the window and
  status rules, the line flags of the pricing stage, the single-SKU checkout submit.
- ``routes``: the admin routes built from an ``AdminRoutes`` spec, and the store order response.

Each module keeps its own rules (prices, teams, cuts) and its own names; this package has no
tables, no routers and no jobs of its own.
"""
