"""Product reviews (商品评价): customers review items of their shipped or completed orders."""
