"""Flash sales (秒杀): limited activity stock at a flash price in per-day session slots, with a
per-member limit, sold through a gate that never oversells (``gate.py``)."""
