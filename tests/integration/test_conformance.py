"""RFC 6455 conformance: the Autobahn cases, run by `kosoku` (PyPI) against /ws/echo, which
echoes through the same reader, queue and writer as chat clients."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import require

SECTIONS = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "10.*"]
KOSOKU = Path(sys.executable).parent / "kosoku"


def test_autobahn_sections_1_to_7_and_10_are_all_ok(make_server, tmp_path) -> None:
    require(KOSOKU.exists(), "kosoku (the Autobahn cases; requirements-dev.txt)")
    server = make_server({"CHAT_ECHO_ROUTE": "1"})
    reports = tmp_path / "reports"
    include = [arg for section in SECTIONS for arg in ("-i", section)]
    subprocess.run(
        [str(KOSOKU), "-p", "4", *include, "-o", str(reports), f"ws://127.0.0.1:{server.port}/ws/echo"],
        check=False,
        capture_output=True,
        timeout=120,
    )
    results = {}
    for path in reports.glob("*_case_*.json"):
        case = json.loads(path.read_text())
        results[case["id"]] = (case["behavior"], case["behaviorClose"])
    assert len(results) == 247, f"{len(results)} cases reported"
    # Strict: OK, or INFORMATIONAL where the suite only reports (close codes 7.1.6, 7.13.x)
    passed = {("OK", "OK"), ("INFORMATIONAL", "INFORMATIONAL")}
    not_ok = {case: r for case, r in results.items() if r not in passed}
    assert not not_ok, not_ok


def test_the_echo_route_is_off_by_default(server) -> None:
    status, _, body = server.get("/ws/echo")
    assert status == 404 and json.loads(body)["error"] == "not_found"
