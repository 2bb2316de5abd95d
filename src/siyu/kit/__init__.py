"""Small shared building blocks: money, time, errors, pagination, outbox, audit, crypto."""
