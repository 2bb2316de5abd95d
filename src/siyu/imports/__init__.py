"""CSV import of members and historical orders for merchants moving from another system."""
