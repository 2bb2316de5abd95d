"""Demo data: reviews of items from completed orders (the most recent 24 lines), through the
service (so each obeys the review rules), with ratings mostly 4-5, a few replies, and one
hidden review. Each review is dated one to six days after its order completed (a reply a day
later), not at seed time, so the product page shows a believable history. Deterministic; does
nothing when the merchant already has reviews."""

from __future__ import annotations

import datetime as dt
import random

from sqlalchemy import select
from sqlalchemy.orm import Session

from siyu.kit.timeutil import utcnow
from siyu.orders.models import COMPLETED, Order, OrderLine
from siyu.reviews import service
from siyu.reviews.models import ProductReview
from siyu.reviews.schemas import ReviewIn

SYSTEM = ("system", None)
TEXTS = {
    5: ["镜框很轻，戴一天也不压鼻梁", "做工精细，配镜师傅很专业", "第二次回购了，清晰度很好"],
    4: ["整体不错，物流稍慢", "颜色和图片一致，度数准确"],
    3: ["一般，镜腿有点紧"],
    2: ["等了好几天才发货"],
}
RATINGS = [5, 5, 5, 4, 5, 4, 3, 5, 4, 2]


def seed(session: Session, merchant_id: int) -> None:
    if session.scalar(select(ProductReview.id).where(ProductReview.merchant_id == merchant_id).limit(1)):
        return
    rng = random.Random(merchant_id * 7919)
    lines = session.execute(
        select(OrderLine.id, Order.member_id, Order.completed_at)
        .join(Order, (Order.id == OrderLine.order_id) & (Order.merchant_id == OrderLine.merchant_id))
        .where(Order.merchant_id == merchant_id, Order.status == COMPLETED)
        .order_by(OrderLine.id.desc())
        .limit(24)
    ).all()
    for i, (line_id, member_id, completed_at) in enumerate(lines):
        rating = RATINGS[i % len(RATINGS)]
        body = ReviewIn(order_line_id=line_id, rating=rating, content=rng.choice(TEXTS[rating]))
        review, _ = service.create_review(session, merchant_id, member_id, body)
        if rating <= 3:
            service.reply(
                session, merchant_id, review.id, "抱歉给您带来不便，客服会尽快联系您。", actor=SYSTEM
            )
        if i == 6:
            service.set_visibility(session, merchant_id, review.id, False, actor=SYSTEM)
        if completed_at is not None:
            now = utcnow()
            written = completed_at + dt.timedelta(days=rng.randint(1, 6), hours=rng.randint(0, 12))
            review.created_at = min(written, now)
            if review.replied_at is not None:
                review.replied_at = min(review.created_at + dt.timedelta(days=1), now)
