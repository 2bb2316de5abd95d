"""After-sales (售后): refund only, return and refund, exchange — requests, review, returns, refunds."""
