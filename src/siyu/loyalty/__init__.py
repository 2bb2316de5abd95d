"""Loyalty: points, growth value, levels and benefits, check-in, paid membership cards."""
