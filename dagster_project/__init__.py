"""Trainyard: managed training-data operations on Dagster (framework-free domain logic lives here)."""
