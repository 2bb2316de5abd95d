"""Catalog logic: categories (a tree), products with their SKUs, status, stock adjustments, and
the reads the store and other domains need.

Services never commit; the request (or worker) unit of work does. Input that breaks a rule is
refused before anything is written, with every offending field path in one 422, so bad input
never leaves a half-created product behind.

Used by other domains:

- ``load_skus_for_checkout(session, merchant_id, sku_ids)`` → ``{sku_id: (Sku, Product)}``;
  404 ``sku_not_found`` for a missing or foreign SKU, 409 ``product_not_on_sale`` for an inactive
  SKU or a product not on sale.
- ``get_product(session, merchant_id, product_id)`` / ``get_sku(session, merchant_id, sku_id)``:
  404 ``not_found`` when missing or foreign.
- ``product_cards(session, merchant_id, product_ids)``: title/price snapshots of products on sale.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from siyu.catalog import repository as repo
from siyu.catalog.models import (
    KIND_VIRTUAL,
    PRODUCT_DRAFT,
    PRODUCT_OFF_SHELF,
    PRODUCT_ON_SALE,
    Category,
    Product,
    Sku,
)
from siyu.catalog.schemas import (
    CategoryIn,
    CategoryNode,
    CategoryUpdate,
    ProductCard,
    ProductCreate,
    ProductListItem,
    ProductUpdate,
    SkuIn,
    SkuUpdate,
    StoreCategoryNode,
    StoreProductOut,
    StoreSkuOut,
)
from siyu.kit import audit
from siyu.kit.errors import DomainError, FieldError, catalogue, invalid, not_found, register_messages
from siyu.kit.pagination import Page, PageParams, apply_sort, paginate

register_messages(
    {
        "category_has_products": (
            409,
            "该分类下还有 {count} 个商品，不能删除",
            "The category still holds {count} products and cannot be deleted",
        ),
        "category_has_children": (
            409,
            "该分类下还有子分类，不能删除",
            "The category has sub-categories and cannot be deleted",
        ),
        "sku_code_taken": (409, "SKU 编码 {sku_code} 已被使用", "SKU code {sku_code} is already in use"),
        "product_transition_invalid": (
            409,
            "商品状态不能从 {from_state} 变为 {to_state}",
            "A product cannot go from {from_state} to {to_state}",
        ),
        "product_needs_active_sku": (
            409,
            "在售商品至少需要一个启用的 SKU",
            "A product on sale needs at least one active SKU",
        ),
        "stock_would_go_negative": (
            409,
            "库存不能小于 0（SKU {sku_id} 当前库存 {stock}，调整 {delta}）",
            "Stock cannot go below 0 (SKU {sku_id} has {stock}, change {delta})",
        ),
        "card_product_virtual": (
            409,
            "会员卡商品必须是虚拟商品（无需收货地址与运费）",
            "A membership card product must stay virtual (no address, no freight)",
        ),
    }
)
# Shared with the orders domain (same text); whoever is imported first registers them.
_SHARED = {
    "sku_not_found": (404, "商品规格不存在（SKU {sku_id}）", "Product variant not found (SKU {sku_id})"),
    "product_not_on_sale": (409, "商品已下架或不可购买（SKU {sku_id}）", "The product is not on sale (SKU {sku_id})"),
}
register_messages({k: v for k, v in _SHARED.items() if k not in catalogue()})

Actor = tuple[str, int | None]
SYSTEM: Actor = ("system", None)

#: Legal status moves. Same-status requests are no-ops.
TRANSITIONS: dict[str, frozenset[str]] = {
    PRODUCT_DRAFT: frozenset({PRODUCT_ON_SALE}),
    PRODUCT_ON_SALE: frozenset({PRODUCT_OFF_SHELF}),
    PRODUCT_OFF_SHELF: frozenset({PRODUCT_ON_SALE}),
}


# -- categories ----------------------------------------------------------------------------------


def get_category(session: Session, merchant_id: int, category_id: int) -> Category:
    category = repo.category_by_id(session, merchant_id, category_id)
    if category is None:
        raise not_found("分类", "Category")
    return category


def _check_parent(session: Session, merchant_id: int, category_id: int | None, parent_id: int | None) -> None:
    if parent_id is None:
        return
    get_category(session, merchant_id, parent_id)
    if category_id is None:
        return
    parents = repo.category_parents(session, merchant_id)
    cursor: int | None = parent_id
    seen: set[int] = set()
    while cursor is not None and cursor not in seen:
        if cursor == category_id:
            raise invalid("body.parent_id", "category_cycle", "a category cannot be placed under itself or its descendant",
                          "分类不能放在自己或自己的子分类下")
        seen.add(cursor)
        cursor = parents.get(cursor)


def create_category(session: Session, merchant_id: int, data: CategoryIn) -> Category:
    _check_parent(session, merchant_id, None, data.parent_id)
    category = Category(merchant_id=merchant_id, **data.model_dump())
    session.add(category)
    session.flush()
    return category


def update_category(session: Session, merchant_id: int, category_id: int, data: CategoryUpdate) -> Category:
    category = get_category(session, merchant_id, category_id)
    fields = data.model_dump(exclude_unset=True)
    _refuse_nulls(fields, ("name", "sort", "visible"))
    if "parent_id" in fields:
        _check_parent(session, merchant_id, category.id, fields["parent_id"])
    for key, value in fields.items():
        setattr(category, key, value)
    session.flush()
    return category


def delete_category(session: Session, merchant_id: int, category_id: int) -> None:
    category = get_category(session, merchant_id, category_id)
    count = repo.category_product_count(session, merchant_id, category_id)
    if count:
        raise DomainError("category_has_products", count=count)
    if repo.category_has_children(session, merchant_id, category_id):
        raise DomainError("category_has_children")
    session.delete(category)
    session.flush()


def category_tree(session: Session, merchant_id: int) -> list[CategoryNode]:
    """Every category, nested, each level ordered by ``sort`` then id."""
    rows = repo.categories(session, merchant_id)
    nodes = {c.id: CategoryNode.model_validate(c) for c in rows}
    roots: list[CategoryNode] = []
    for c in rows:  # rows are already in (sort, id) order, so children keep it
        node = nodes[c.id]
        parent = nodes.get(c.parent_id) if c.parent_id is not None else None
        (parent.children if parent is not None else roots).append(node)
    return roots


def store_category_tree(session: Session, merchant_id: int) -> list[StoreCategoryNode]:
    """Visible categories only; a hidden category hides its whole subtree."""
    rows = repo.categories(session, merchant_id)
    children: dict[int | None, list[Category]] = {}
    for c in rows:
        children.setdefault(c.parent_id, []).append(c)

    def build(parent_id: int | None) -> list[StoreCategoryNode]:
        return [
            StoreCategoryNode(id=c.id, name=c.name, image_url=c.image_url, children=build(c.id))
            for c in children.get(parent_id, [])
            if c.visible
        ]

    return build(None)


def descendant_ids(session: Session, merchant_id: int, category_id: int) -> list[int]:
    """The category and every category below it (unknown ids give just themselves: no match)."""
    parents = repo.category_parents(session, merchant_id)
    kids: dict[int, list[int]] = {}
    for cid, parent in parents.items():
        if parent is not None:
            kids.setdefault(parent, []).append(cid)
    found, stack = [category_id], [category_id]
    seen = {category_id}
    while stack:
        for child in kids.get(stack.pop(), []):
            if child not in seen:
                seen.add(child)
                found.append(child)
                stack.append(child)
    return found


# -- validation helpers --------------------------------------------------------------------------


def _refuse_nulls(fields: dict[str, Any], names: Iterable[str]) -> None:
    errors = [
        FieldError(f"body.{name}", "null_not_allowed", f"{name} cannot be null", f"{name} 不能为 null")
        for name in names
        if name in fields and fields[name] is None
    ]
    if errors:
        raise DomainError("validation_error", fields=errors)


def _spec_key(spec_names: list[str], specs: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(specs.get(n)) for n in spec_names)


def _sku_errors(
    path: str, spec_names: list[str], specs: dict[str, Any], list_price: int, sale_price: int
) -> list[FieldError]:
    errors: list[FieldError] = []
    if set(specs) != set(spec_names):
        missing = sorted(set(spec_names) - set(specs))
        extra = sorted(set(specs) - set(spec_names))
        errors.append(
            FieldError(
                f"{path}.specs",
                "specs_mismatch",
                f"specs keys must equal the product's spec_names {spec_names} (missing {missing}, unexpected {extra})",
                f"规格项必须与商品的规格名 {spec_names} 一致（缺少 {missing}，多出 {extra}）",
            )
        )
    if sale_price > list_price:
        errors.append(
            FieldError(f"{path}.sale_price", "sale_above_list", "sale_price cannot be higher than list_price", "售价不能高于划线价")
        )
    return errors


def _check_references(
    session: Session, merchant_id: int, category_id: int | None, freight_template_id: int | None
) -> None:
    if category_id is not None:
        get_category(session, merchant_id, category_id)
    if freight_template_id is not None and not repo.freight_template_exists(session, merchant_id, freight_template_id):
        raise not_found("运费模板", "Freight template")


def _flush_skus(session: Session, codes: list[str]) -> None:
    """Flush new or changed SKUs; a unique violation (a concurrent insert) is ``sku_code_taken``."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError as exc:
        raise DomainError("sku_code_taken", sku_code=", ".join(codes)) from exc


# -- products ------------------------------------------------------------------------------------


def get_product(session: Session, merchant_id: int, product_id: int) -> Product:
    product = repo.product_by_id(session, merchant_id, product_id)
    if product is None:
        raise not_found("商品", "Product")
    return product


def get_sku(session: Session, merchant_id: int, sku_id: int) -> Sku:
    sku = repo.sku_by_id(session, merchant_id, sku_id)
    if sku is None:
        raise not_found("商品规格", "SKU")
    return sku


def product_skus(session: Session, merchant_id: int, product_id: int) -> list[Sku]:
    return repo.skus_of(session, merchant_id, [product_id])


def create_product(session: Session, merchant_id: int, data: ProductCreate) -> Product:
    """A draft product and all its SKUs, or nothing."""
    _check_references(session, merchant_id, data.category_id, data.freight_template_id)
    spec_names = list(data.spec_names)
    errors: list[FieldError] = []
    if len(set(spec_names)) != len(spec_names):
        errors.append(FieldError("body.spec_names", "duplicate_spec_name", "spec names must be unique", "规格名不能重复"))
    seen_codes: dict[str, int] = {}
    seen_specs: dict[tuple[str, ...], int] = {}
    for i, sku in enumerate(data.skus):
        path = f"body.skus.{i}"
        errors.extend(_sku_errors(path, spec_names, sku.specs, sku.list_price, sku.sale_price))
        if sku.sku_code in seen_codes:
            errors.append(
                FieldError(f"{path}.sku_code", "duplicate_sku_code", f"sku_code {sku.sku_code!r} appears twice",
                           f"SKU 编码 {sku.sku_code!r} 重复")
            )
        seen_codes.setdefault(sku.sku_code, i)
        key = _spec_key(spec_names, sku.specs)
        if sku.active and key in seen_specs:
            errors.append(
                FieldError(f"{path}.specs", "duplicate_specs", f"the same specs as skus.{seen_specs[key]}",
                           f"与 skus.{seen_specs[key]} 的规格相同")
            )
        if sku.active:
            seen_specs.setdefault(key, i)
    if errors:
        raise DomainError("validation_error", fields=errors)
    taken = repo.taken_sku_codes(session, merchant_id, seen_codes)
    if taken:
        raise DomainError("sku_code_taken", sku_code=", ".join(sorted(taken)))

    fields = data.model_dump(exclude={"skus", "spec_names"})
    product = Product(merchant_id=merchant_id, spec_names=spec_names, status=PRODUCT_DRAFT, sales_count=0, **fields)
    session.add(product)
    session.flush()
    for sku in data.skus:
        session.add(Sku(merchant_id=merchant_id, product_id=product.id, **sku.model_dump()))
    _flush_skus(session, list(seen_codes))
    return product


def update_product(session: Session, merchant_id: int, product_id: int, data: ProductUpdate) -> Product:
    product = get_product(session, merchant_id, product_id)
    fields = data.model_dump(exclude_unset=True)
    _check_references(session, merchant_id, fields.get("category_id"), fields.get("freight_template_id"))
    if fields.get("kind", KIND_VIRTUAL) != KIND_VIRTUAL and product.kind == KIND_VIRTUAL:
        _check_not_a_card(session, merchant_id, product.id)
    for key, value in fields.items():
        setattr(product, key, value)
    session.flush()
    return product


def _check_not_a_card(session: Session, merchant_id: int, product_id: int) -> None:
    """A card plan's product delivers by granting the card: it must not become physical."""
    from siyu.loyalty import repository as loyalty_repo  # loyalty builds on catalog, not the reverse

    if loyalty_repo.card_plans_for_products(session, merchant_id, [product_id]):
        raise DomainError("card_product_virtual")


def set_product_status(
    session: Session, merchant_id: int, product_id: int, status: str, *, actor: Actor = SYSTEM
) -> Product:
    """draft → on_sale → off_shelf → on_sale. Going on sale needs at least one active SKU."""
    product = get_product(session, merchant_id, product_id)
    current = product.status
    if current == status:
        return product
    if status not in TRANSITIONS.get(current, frozenset()):
        raise DomainError("product_transition_invalid", from_state=current, to_state=status)
    if status == PRODUCT_ON_SALE and repo.active_sku_count(session, merchant_id, product_id) == 0:
        raise DomainError("product_needs_active_sku")
    product.status = status
    audit.record(
        session, merchant_id, "product", product.id, "status_changed", from_state=current, to_state=status, actor=actor
    )
    session.flush()
    return product


# -- SKUs ----------------------------------------------------------------------------------------


def _product_sku(session: Session, merchant_id: int, product_id: int, sku_id: int) -> tuple[Product, Sku]:
    product = get_product(session, merchant_id, product_id)
    sku = repo.sku_by_id(session, merchant_id, sku_id)
    if sku is None or sku.product_id != product.id:
        raise not_found("商品规格", "SKU")
    return product, sku


def _check_unique_specs(
    session: Session, merchant_id: int, product: Product, specs: dict[str, Any], excluding: int | None
) -> None:
    key = _spec_key(product.spec_names, specs)
    for other in repo.skus_of(session, merchant_id, [product.id], active_only=True):
        if other.id != excluding and _spec_key(product.spec_names, other.specs) == key:
            raise invalid("body.specs", "duplicate_specs", f"SKU {other.id} already has these specs", f"SKU {other.id} 已是这组规格")


def add_sku(session: Session, merchant_id: int, product_id: int, data: SkuIn) -> Sku:
    product = get_product(session, merchant_id, product_id)
    errors = _sku_errors("body", list(product.spec_names), data.specs, data.list_price, data.sale_price)
    if errors:
        raise DomainError("validation_error", fields=errors)
    if data.active:
        _check_unique_specs(session, merchant_id, product, data.specs, None)
    if repo.taken_sku_codes(session, merchant_id, [data.sku_code]):
        raise DomainError("sku_code_taken", sku_code=data.sku_code)
    sku = Sku(merchant_id=merchant_id, product_id=product.id, **data.model_dump())
    session.add(sku)
    _flush_skus(session, [data.sku_code])
    return sku


PRICE_FIELDS = ("list_price", "sale_price", "cost_price")


def update_sku(
    session: Session, merchant_id: int, product_id: int, sku_id: int, data: SkuUpdate, *, actor: Actor = SYSTEM
) -> Sku:
    """Change a SKU's code, specs, prices, weight, image or active flag. Price changes are audited
    (subject ``sku``, action ``price_changed``)."""
    product, sku = _product_sku(session, merchant_id, product_id, sku_id)
    fields = data.model_dump(exclude_unset=True)
    _refuse_nulls(fields, ("sku_code", "specs", "list_price", "sale_price", "cost_price", "weight_g", "active"))
    specs = fields.get("specs", sku.specs)
    list_price = fields.get("list_price", sku.list_price)
    sale_price = fields.get("sale_price", sku.sale_price)
    errors = _sku_errors("body", list(product.spec_names), specs, list_price, sale_price)
    if "specs" not in fields:  # a stale stored SKU is not the caller's fault; only check what is sent
        errors = [e for e in errors if e.code != "specs_mismatch"]
    if errors:
        raise DomainError("validation_error", fields=errors)
    active = fields.get("active", sku.active)
    if active and ("specs" in fields or (not sku.active and active)):
        _check_unique_specs(session, merchant_id, product, specs, sku.id)
    if sku.active and not active:
        _check_can_deactivate(session, merchant_id, product, sku)
    code = fields.get("sku_code")
    if code is not None and code != sku.sku_code and repo.taken_sku_codes(session, merchant_id, [code]):
        raise DomainError("sku_code_taken", sku_code=code)
    prices = {k: (getattr(sku, k), fields[k]) for k in PRICE_FIELDS if k in fields and fields[k] != getattr(sku, k)}
    for key, value in fields.items():
        setattr(sku, key, value)
    if prices:
        audit.record(
            session, merchant_id, "sku", sku.id, "price_changed", actor=actor,
            data={k: {"before": before, "after": after} for k, (before, after) in prices.items()},
        )
    _flush_skus(session, [sku.sku_code])
    return sku


def _check_can_deactivate(session: Session, merchant_id: int, product: Product, sku: Sku) -> None:
    if product.status == PRODUCT_ON_SALE and repo.active_sku_count(session, merchant_id, product.id, excluding=sku.id) == 0:
        raise DomainError("product_needs_active_sku")


def deactivate_sku(session: Session, merchant_id: int, product_id: int, sku_id: int) -> Sku:
    """Stop selling a SKU (rows are kept: orders point at them). The last active SKU of a product on
    sale cannot be deactivated: take the product off the shelf first."""
    product, sku = _product_sku(session, merchant_id, product_id, sku_id)
    if sku.active:
        _check_can_deactivate(session, merchant_id, product, sku)
        sku.active = False
        session.flush()
    return sku


def adjust_stock(
    session: Session,
    merchant_id: int,
    sku_id: int,
    *,
    mode: str,
    quantity: int,
    reason: str | None = None,
    actor: Actor = SYSTEM,
) -> Sku:
    """Set the stock (``mode="set"``) or change it by ``quantity`` (``"delta"``); never below 0.

    The delta is one conditional ``UPDATE ... WHERE stock + :d >= 0`` (no read-then-write, so a
    concurrent checkout reservation cannot be lost); a set locks the row to record the old value.
    Audited as subject ``sku``, action ``stock_adjusted`` with before/after.
    """
    sku = get_sku(session, merchant_id, sku_id)
    if mode == "set":
        if quantity < 0:
            raise invalid("body.quantity", "negative_stock", "stock cannot be set below 0", "库存不能小于 0")
        before = repo.lock_stock(session, merchant_id, sku_id)
        if before is None:
            raise not_found("商品规格", "SKU")
        repo.set_stock(session, merchant_id, sku_id, quantity)
        after = quantity
    elif mode == "delta":
        new = repo.add_stock(session, merchant_id, sku_id, quantity)
        if new is None:
            session.refresh(sku)
            raise DomainError("stock_would_go_negative", sku_id=sku_id, stock=sku.stock, delta=quantity)
        after, before = new, new - quantity
    else:
        raise invalid("body.mode", "invalid_mode", "mode must be 'set' or 'delta'", "mode 应为 set 或 delta")
    audit.record(
        session,
        merchant_id,
        "sku",
        sku_id,
        "stock_adjusted",
        actor=actor,
        data={"mode": mode, "quantity": quantity, "before": before, "after": after, "reason": reason},
    )
    session.refresh(sku)
    return sku


# -- for other domains ---------------------------------------------------------------------------


def load_skus_for_checkout(session: Session, merchant_id: int, sku_ids: Iterable[int]) -> dict[int, tuple[Sku, Product]]:
    """Every requested SKU with its product, all sellable, or an error naming the first bad SKU.

    404 ``sku_not_found``: missing or another merchant's. 409 ``product_not_on_sale``: the SKU is
    inactive or its product is not on sale. Stock is not checked here (``catalog.stock.reserve``).
    """
    wanted = sorted(set(sku_ids))
    found = repo.skus_with_products(session, merchant_id, wanted)
    for sku_id in wanted:
        if sku_id not in found:
            raise DomainError("sku_not_found", sku_id=sku_id)
    for sku_id in wanted:
        sku, product = found[sku_id]
        if not sku.active or product.status != PRODUCT_ON_SALE:
            raise DomainError("product_not_on_sale", sku_id=sku_id)
    return found


def product_cards(session: Session, merchant_id: int, product_ids: Iterable[int]) -> dict[int, ProductCard]:
    """Title/price snapshots of those products that are on sale with an active SKU."""
    products = [p for p in repo.products_by_ids(session, merchant_id, product_ids) if p.status == PRODUCT_ON_SALE]
    stats = repo.sku_stats(session, merchant_id, [p.id for p in products])
    cards: dict[int, ProductCard] = {}
    for p in products:
        s = stats.get(p.id)
        if s is None:
            continue
        cards[p.id] = ProductCard(
            id=p.id, title=p.title, subtitle=p.subtitle, image=_first_image(p),
            min_sale_price=s.min_sale_price, min_list_price=s.min_list_price, sold_out=s.total_stock <= 0,
            sales_count=p.sales_count,
        )
    return cards


def _first_image(product: Product) -> str | None:
    return product.images[0] if product.images else None


# -- lists ---------------------------------------------------------------------------------------

ADMIN_SORTS = {
    "id": Product.id,
    "created_at": Product.created_at,
    "updated_at": Product.updated_at,
    "title": Product.title,
    "sort": Product.sort,
    "sales_count": Product.sales_count,
    "status": Product.status,
}


def list_products(
    session: Session,
    merchant_id: int,
    params: PageParams,
    *,
    status: str | None = None,
    category_id: int | None = None,
    q: str | None = None,
    low_stock: int | None = None,
) -> Page[ProductListItem]:
    """The admin product list. ``category_id`` includes its sub-categories."""
    category_ids = descendant_ids(session, merchant_id, category_id) if category_id is not None else None
    stmt = repo.admin_product_search(merchant_id, status=status, category_ids=category_ids, q=q, low_stock=low_stock)
    stmt = apply_sort(stmt, params.sort, ADMIN_SORTS, Product.id.desc())
    rows, total = paginate(session, stmt, params)
    stats = repo.sku_stats(session, merchant_id, [p.id for p in rows])
    items = []
    for p in rows:
        s = stats.get(p.id)
        items.append(
            ProductListItem(
                id=p.id, title=p.title, subtitle=p.subtitle, status=p.status, category_id=p.category_id,
                image=_first_image(p),
                min_sale_price=s.min_sale_price if s else None, max_sale_price=s.max_sale_price if s else None,
                total_stock=s.total_stock if s else 0, active_sku_count=s.sku_count if s else 0,
                sales_count=p.sales_count, sort=p.sort, created_at=p.created_at, updated_at=p.updated_at,
            )
        )
    return Page(items=items, total=total, page=params.page, page_size=params.page_size)


STORE_SORT_ALIASES = {"newest": "-created_at"}
#: the names ``repository.store_product_search`` sorts by (its ``sortable``), for the endpoint's enum
STORE_SORTS = ("price", "sales", "created_at", "sort")


def store_list_products(
    session: Session,
    merchant_id: int,
    params: PageParams,
    *,
    category_id: int | None = None,
    q: str | None = None,
) -> Page[ProductCard]:
    """Products on sale (with an active SKU). Sort: ``price``/``-price``, ``sales``/``-sales``,
    ``newest`` (= ``-created_at``); default is the merchant's ``sort`` then newest id."""
    category_ids = descendant_ids(session, merchant_id, category_id) if category_id is not None else None
    stmt, sortable = repo.store_product_search(merchant_id, category_ids=category_ids, q=q)
    sort = STORE_SORT_ALIASES.get(params.sort or "", params.sort)
    stmt = apply_sort(stmt, sort, sortable, Product.sort.asc()).order_by(Product.id.desc())
    rows, total = paginate(session, stmt, params)
    cards = product_cards(session, merchant_id, [p.id for p in rows])
    return Page(
        items=[cards[p.id] for p in rows if p.id in cards], total=total, page=params.page, page_size=params.page_size
    )


def store_product(session: Session, merchant_id: int, product_id: int) -> StoreProductOut:
    """A product on sale with its active SKUs; anything else is a 404."""
    product = repo.product_by_id(session, merchant_id, product_id)
    skus = repo.skus_of(session, merchant_id, [product_id], active_only=True) if product else []
    if product is None or product.status != PRODUCT_ON_SALE or not skus:
        raise not_found("商品", "Product")
    return StoreProductOut(
        id=product.id, category_id=product.category_id, title=product.title, subtitle=product.subtitle,
        description=product.description, images=list(product.images or []), spec_names=list(product.spec_names or []),
        kind=product.kind, free_shipping=product.free_shipping, bonus_points=product.bonus_points,
        coupons_allowed=product.coupons_allowed,
        min_sale_price=min(s.sale_price for s in skus), min_list_price=min(s.list_price for s in skus),
        sold_out=sum(s.stock for s in skus) <= 0, sales_count=product.sales_count,
        skus=[
            StoreSkuOut(
                id=s.id, specs=dict(s.specs or {}), sale_price=s.sale_price, list_price=s.list_price,
                image_url=s.image_url, in_stock=s.stock > 0, stock=s.stock,
            )
            for s in skus
        ],
    )
