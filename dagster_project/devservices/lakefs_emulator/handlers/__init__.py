"""The lakeFS API route handlers, one module per group of routes of the lakeFS v1 OpenAPI spec.

Why this exists: each handler module registers its routes with ``@route`` when it is imported, so this
package imports all of them; importing ``handlers`` is what makes the route table complete.
"""

# isort: off
# Registration order is the order of the original single module (health & config first): it is the
# order match_route tries routes in and the order served_routes() lists them in.
from . import health, repositories, branches, objects, commits, diff_merge, actions

# isort: on

__all__ = ["actions", "branches", "commits", "diff_merge", "health", "objects", "repositories"]
