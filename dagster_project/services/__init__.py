"""Services Trainyard runs itself in production (next to Dagster), such as the lakeFS pre-merge gatekeeper."""
