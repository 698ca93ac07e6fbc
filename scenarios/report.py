"""The scenario report: a text table for people, JSON and JUnit XML for machines."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree as ET

from gateway import __version__
from scenarios.runner import Row, ScenarioResult


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What a report must say about the run itself: which ocpp809, which configuration,
    against what (an in-process gateway on loopback, or a running one at ``target``)."""

    config_path: str | None = None  # the site file (--config); None: the built-in defaults
    config_sha256: str | None = None
    target: str | None = None  # HOST:PORT of a running gateway; None: simulated in this process
    version: str = __version__

    @property
    def mode(self) -> str:
        return "simulated" if self.target is None else "target"

    def describe(self) -> str:
        config = (
            "built-in defaults"
            if self.config_path is None
            else f"{self.config_path} (sha256 {(self.config_sha256 or '')[:12]})"
        )
        against = (
            "a gateway in this process on loopback, simulated stations"
            if self.target is None
            else f"the running gateway at {self.target} and its real stations"
        )
        return f"ocpp809 {self.version}; configuration {config}; against {against}"

    def as_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "mode": self.mode,
            "configuration": None
            if self.config_path is None
            else {"path": self.config_path, "sha256": self.config_sha256},
            "target": self.target,
        }


_HEADERS = ("scenario", "step", "expected", "measured", "result", "timing")
_WIDTHS = (28, 32, 44, 30, 6, 11)


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _timing(row: Row) -> str:
    if row.timing_s is None:
        return ""
    return f"{'<=' if row.timing_upper_bound else ''}{row.timing_s:.3f} s"


def format_table(results: Sequence[ScenarioResult], time_scale: float, info: RunInfo | None = None) -> str:
    """A fixed-width table, one line per row, then one summary line."""
    lines = [] if info is None else [info.describe()]
    lines.append(f"time scale {time_scale:g}x" + (" (real time)" if time_scale == 1 else ""))
    header = "  ".join(h.ljust(w) for h, w in zip(_HEADERS, _WIDTHS, strict=True)).rstrip()
    lines += [header, "-" * len(header)]
    for result in results:
        for row in result.rows:
            cells = (
                row.scenario,
                row.step,
                row.expected,
                row.measured,
                "PASS" if row.passed else "FAIL",
                _timing(row),
            )
            lines.append(
                "  ".join(_clip(c, w).ljust(w) for c, w in zip(cells, _WIDTHS, strict=True)).rstrip()
            )
    passed = sum(r.passed for r in results)
    checks = sum(len(r.rows) for r in results)
    failed_rows = sum(not row.passed for r in results for row in r.rows)
    lines.append("-" * len(header))
    lines.append(
        f"{passed}/{len(results)} scenarios passed, {checks - failed_rows}/{checks} rows passed, "
        f"{sum(r.duration_s for r in results):.1f} s"
    )
    return "\n".join(lines)


def to_json(
    results: Sequence[ScenarioResult], time_scale: float, info: RunInfo | None = None
) -> dict[str, object]:
    return {
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.node(),
        **(info or RunInfo()).as_json(),
        "time_scale": time_scale,
        "passed": all(r.passed for r in results),
        "scenarios": [
            {
                "name": r.scenario,
                "file": r.file,
                "passed": r.passed,
                "duration_s": round(r.duration_s, 3),
                "rows": [
                    {
                        "step": row.step,
                        "expected": row.expected,
                        "measured": row.measured,
                        "passed": row.passed,
                        "timing_s": None if row.timing_s is None else round(row.timing_s, 4),
                        "timing_is_upper_bound": row.timing_upper_bound,
                    }
                    for row in r.rows
                ],
            }
            for r in results
        ],
    }


def to_junit(results: Sequence[ScenarioResult], time_scale: float, info: RunInfo | None = None) -> ET.Element:
    """One <testsuite> per scenario, one <testcase> per row (a failed row carries <failure>)."""
    info = info or RunInfo()
    properties = {
        "time_scale": f"{time_scale:g}",
        "version": info.version,
        "mode": info.mode,
        "configuration": info.config_path or "(built-in defaults)",
        "configuration_sha256": info.config_sha256 or "",
        "target": info.target or "",
    }
    suites = ET.Element("testsuites", name="ocpp809 scenarios")
    for r in results:
        failures = sum(not row.passed for row in r.rows)
        suite = ET.SubElement(
            suites,
            "testsuite",
            name=r.scenario,
            tests=str(len(r.rows)),
            failures=str(failures),
            errors="0",
            time=f"{r.duration_s:.3f}",
            file=r.file,
        )
        props = ET.SubElement(suite, "properties")
        for name, value in properties.items():
            ET.SubElement(props, "property", name=name, value=value)
        for index, row in enumerate(r.rows):
            case = ET.SubElement(
                suite,
                "testcase",
                classname=r.scenario,
                name=f"{index:02d} {row.step}",
                time=f"{row.timing_s or 0.0:.3f}",
            )
            if not row.passed:
                failure = ET.SubElement(
                    case, "failure", message=f"expected {row.expected}, measured {row.measured}"
                )
                failure.text = f"expected: {row.expected}\nmeasured: {row.measured}\n"
            else:
                out = ET.SubElement(case, "system-out")
                out.text = f"measured: {row.measured}"
    return suites


def write_reports(
    results: Sequence[ScenarioResult], time_scale: float, report_dir: Path, info: RunInfo | None = None
) -> tuple[Path, Path]:
    report_dir.mkdir(parents=True, exist_ok=True)
    json_path = report_dir / "scenarios.json"
    junit_path = report_dir / "scenarios.junit.xml"
    json_path.write_text(json.dumps(to_json(results, time_scale, info), indent=2) + "\n", encoding="utf-8")
    tree = ET.ElementTree(to_junit(results, time_scale, info))
    ET.indent(tree)
    tree.write(junit_path, encoding="utf-8", xml_declaration=True)
    return json_path, junit_path
