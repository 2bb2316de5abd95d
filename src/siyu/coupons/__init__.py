"""Coupons: templates, the member wallet, the COUPONS pricing stage; see ``service``."""
