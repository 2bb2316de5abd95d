"""Demo data: an eyewear chain with products, customers and a year of orders."""
