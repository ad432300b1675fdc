"""libferry (the C client) against a live ferryd."""

import os
import subprocess

from conftest import BUILD


def test_libferry_pipelining_and_parking(ferryd):
    exe = os.path.join(BUILD, "libferry_check")
    r = subprocess.run([exe, ferryd.sock], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "all checks passed" in r.stdout
    assert r.stdout.count("ok: ") >= 9
