"""Dagster resources: the configurable connections to the systems Trainyard runs against."""
