"""``ocpp809 scenario run``: the table, the JSON and JUnit reports, and the exit code."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest

from gateway import __version__
from gateway.cli import main
from scenarios.spec import SCENARIO_DIR, SITE_SCENARIO_DIR

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
    assert (report["version"], report["configuration"], report["target"]) == (__version__, None, None)
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


@pytest.mark.timeout(120)
def test_a_directory_with_the_site_file_runs_in_process_and_the_reports_say_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        # The site's own listeners, allowlist and CSMS: the simulated run keeps to loopback.
        '[iec104]\nlisten_host = "0.0.0.0"\nport = 2404\nallowed_masters = ["10.0.0.1"]\n'
        '[ocpp]\nport = 9000\n[upstream]\ncsms_url = "ws://192.0.2.1:9100/ocpp"\n'
        "[limits]\nmax_limit_w = 80000\ninitial_limit_w = 80000\n"
    )
    scenarios = tmp_path / "mine"
    scenarios.mkdir()
    (scenarios / "t4.toml").write_text(T4.read_text())
    (scenarios / "t4_site.toml").write_text(
        (SITE_SCENARIO_DIR / "t4_site_reverse_telemetry.toml").read_text()
    )
    reports = tmp_path / "r"
    code = main(
        [
            "--log-level",
            "warning",
            "scenario",
            "run",
            str(scenarios),
            "--config",
            str(site),
            "--report-dir",
            str(reports),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2/2 scenarios passed" in out and "IOA 200 in [0, 80000]" in out  # the site's max_limit_w
    assert out.splitlines()[0].startswith(f"ocpp809 {__version__}; configuration {site.resolve()} (sha256 ")
    report = json.loads((reports / "scenarios.json").read_text())
    assert report["version"] == __version__
    assert (report["mode"], report["target"], report["time_scale"]) == ("simulated", None, 60)
    digest = hashlib.sha256(site.read_bytes()).hexdigest()
    assert report["configuration"] == {"path": str(site.resolve()), "sha256": digest}
    assert [s["file"] for s in report["scenarios"]] == [
        str(scenarios / "t4.toml"),
        str(scenarios / "t4_site.toml"),
    ]
    for suite in ET.parse(reports / "scenarios.junit.xml").getroot().iter("testsuite"):
        props = {p.get("name"): p.get("value") for p in suite.iter("property")}
        assert props["configuration_sha256"] == digest and props["mode"] == "simulated"
        assert props["version"] == __version__ and props["target"] == ""


def test_a_wrong_site_file_is_one_line_per_problem_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[limits]\nmin_limit_w = "6 kW"\nbogus = 1\n')
    code = main(["scenario", "run", str(T4), "--config", str(site), "--report-dir", str(tmp_path)])
    err = capsys.readouterr().err.splitlines()
    assert code == 2 and len(err) == 2 and all(line.startswith(f"error: {site}: limits.") for line in err), (
        err
    )
