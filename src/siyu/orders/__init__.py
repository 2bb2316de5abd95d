"""Cart, addresses, freight, the pricing pipeline, checkout, orders and shipments."""
