"""Behaviour events: ingestion from the mini-program and servers, schemas, anonymous identity."""
