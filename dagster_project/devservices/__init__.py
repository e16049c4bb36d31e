"""Local development services that stand in for infrastructure unavailable on developer machines."""
