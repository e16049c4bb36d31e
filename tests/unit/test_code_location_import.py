"""Loading the code location stays cheap: every process that loads it (the daemon's code server, each run worker,
``dagster dev``) pays its import time before doing anything, and a small drop's latency is mostly such start-ups.

The statistics and machine-learning libraries (scipy, scikit-learn, statsmodels, krippendorff) and lakefs-sdk are
imported where they are used; a top-level import of one of them anywhere under the code location brings ~1 s back.
The check runs in a fresh interpreter, so what this test session has already imported does not hide it.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO_ROOT

HEAVY = ("scipy", "sklearn", "statsmodels", "krippendorff", "lakefs_sdk")
PROBE = f"""
import json, sys
import dagster_project.definitions
loaded = sorted(name for name in {HEAVY!r} if name in sys.modules)
from dagster_project.lakefs import LakeFSRepository  # the lazy re-export still resolves, on first use
from dagster_project.lakefs.sdk import LakeFSRepository as adapter
print(json.dumps({{"loaded": loaded, "lazy_export_ok": LakeFSRepository is adapter}}))
"""


def test_loading_the_code_location_imports_no_heavy_library() -> None:
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", PROBE], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    probe = json.loads(result.stdout.strip().splitlines()[-1])
    assert probe["loaded"] == [], f"importing dagster_project.definitions imported {probe['loaded']}"
    assert probe["lazy_export_ok"]
