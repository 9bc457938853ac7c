"""Merchant analytics from the durable event log (DuckDB): credit, metrics with intervals, lifts."""
