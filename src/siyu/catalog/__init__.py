"""Catalog: categories, products and their SKUs (price, stock, specs)."""
