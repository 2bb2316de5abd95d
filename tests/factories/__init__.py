"""Factory functions that build test data through the services (one module per domain)."""
