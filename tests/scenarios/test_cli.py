"""``ocpp809 scenario run``: the table, the JSON and JUnit reports, and the exit code."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from gateway.cli import main
from scenarios.spec import SCENARIO_DIR

T4 = SCENARIO_DIR / "t4_reverse_telemetry.toml"


@pytest.mark.timeout(120)
def test_passing_run_prints_the_table_and_writes_both_reports(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--log-level", "warning", "scenario", "run", str(T4), "--report-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "T4 reverse telemetry" in out and "DSO reads 7200 W" in out
    assert "1/1 scenarios passed" in out
    report = json.loads((tmp_path / "scenarios.json").read_text())
    assert report["passed"] is True and report["time_scale"] == 60
    rows = report["scenarios"][0]["rows"]
    assert rows[-1]["measured"].startswith("7200.0 W") and rows[-1]["timing_s"] is not None
    suite = ET.parse(tmp_path / "scenarios.junit.xml").getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0" and suite.get("tests") == str(len(rows))


@pytest.mark.timeout(120)
def test_failing_run_exits_1_and_the_junit_report_carries_the_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = tmp_path / "t4_wrong.toml"
    wrong.write_text(
        T4.read_text().replace("equals = 7200\ntolerance = 0.5\nwithin_s = 5", "equals = 9999\nwithin_s = 1")
    )
    code = main(
        ["--log-level", "warning", "scenario", "run", str(wrong), "--report-dir", str(tmp_path / "r")]
    )
    assert code == 1
    assert "FAIL" in capsys.readouterr().out
    failures = ET.parse(tmp_path / "r" / "scenarios.junit.xml").getroot().iter("failure")
    messages = [f.get("message", "") for f in failures]
    assert len(messages) == 1 and "IOA 200 = 9999" in messages[0] and "measured 7200.0 W" in messages[0]


def test_a_bad_scenario_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\n[[steps]]\ndo = "explode"\n')
    code = main(["scenario", "run", str(bad), "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}: steps[0].do: unknown action" in err
