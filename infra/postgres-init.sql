-- lakeFS keeps its metadata in its own database next to Dagster's.
CREATE DATABASE lakefs;
