"""Item and order promotions: limited-time discount, first-order special, spend-and-save, spend-and-gift, add-on deal."""
