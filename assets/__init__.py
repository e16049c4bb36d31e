"""Dagster asset, asset-check and sensor definitions; thin wrappers over ``dagster_project`` logic."""
