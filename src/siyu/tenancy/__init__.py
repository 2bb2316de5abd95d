"""Merchants (tenants), staff accounts, roles and permissions, tokens and API keys."""
