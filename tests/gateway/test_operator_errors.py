"""An operator's mistake is one line per problem, exit 2, never a traceback (issue 10)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from gateway.config import check_environment, load_config
from gateway.errors import ConfigErrors
from tests.support.gateway_process import loopback_config, run_cli


def lines(stderr: str) -> list[str]:
    return [line for line in stderr.strip().splitlines() if line]


def test_check_config_reports_every_problem_not_just_the_first(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        "[limits]\nmin_limt_w = 6000\nhold_timeout_s = -1\n[sharing]\nheadroom_w = -5.0\n[ocpp]\nport = 70000\n"
    )
    result = run_cli("check-config", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    got = lines(result.stderr)
    # The unknown key is found by the schema; the rest need a valid schema first, so the
    # unknown key alone is reported for this file; fix it and the others come together.
    assert got == [f"error: {bad}: limits.min_limt_w: unknown key"]
    bad.write_text("[limits]\nhold_timeout_s = -1\n[sharing]\nheadroom_w = -5.0\n[ocpp]\nport = 70000\n")
    got = lines(run_cli("check-config", str(bad)).stderr)
    assert sorted(got) == [  # the core's sections first, then each adapter's: any order will do
        f"error: {bad}: limits.hold_timeout_s: must be > 0",
        f"error: {bad}: ocpp.port: 70000 is outside 0..65535",
        f"error: {bad}: sharing.headroom_w: must be a finite number >= 0, got -5.0",
    ]


def test_schema_errors_are_all_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[limits]\nmin_limt_w = 6000\nmax_limit_w = "lots"\n')
    got = lines(run_cli("check-config", str(bad)).stderr)
    assert len(got) == 2 and all(line.startswith(f"error: {bad}: limits.") for line in got)


def test_check_config_runs_what_run_would_check(tmp_path: Path) -> None:
    config = loopback_config(
        tmp_path,
        '[iec104.tls]\nenabled = true\ncert_file = "/nonexistent/cert.pem"\nkey_file = "/nonexistent/key.pem"\n'
        'ca_file = "/nonexistent/ca.pem"\n',
    )
    text = config.read_text().replace(
        '[ocpp]\nlisten_host = "127.0.0.1"\nport = 0',
        '[ocpp]\nlisten_host = "no-such-host.invalid"\nport = 0',
    )
    text = text.replace(
        '[iec104]\nlisten_host = "127.0.0.1"\nport = 0', '[iec104]\nlisten_host = "127.0.0.1"\nport = 9555'
    )
    text = text.replace(
        "[metrics]\nenabled = false", '[metrics]\nenabled = true\nlisten_host = "0.0.0.0"\nport = 9555'
    )
    config.write_text(text)
    result = run_cli("check-config", str(config))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    got = "\n".join(lines(result.stderr))
    assert "ocpp.listen_host: 'no-such-host.invalid' is neither an IP address" in got
    assert "metrics.port: 9555 is also iec104.port" in got
    assert "iec104.tls.cert_file: /nonexistent/cert.pem: no such file" in got


def test_tls_files_that_are_not_pem_are_named(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    path = loopback_config(
        tmp_path,
        f'[ocpp.tls]\nenabled = true\ncert_file = "{junk}"\nkey_file = "{junk}"\nca_file = "{junk}"\n',
    )
    with pytest.raises(ConfigErrors) as caught:
        check_environment(load_config(path), str(path))
    assert [e.key for e in caught.value.errors] == ["ocpp.tls.cert_file", "ocpp.tls.ca_file"]
    assert all("not a PEM" in e.reason for e in caught.value.errors)


def test_ipv6_hosts_are_valid_listen_hosts_for_every_listener(tmp_path: Path) -> None:
    path = loopback_config(tmp_path)
    path.write_text(path.read_text().replace('listen_host = "127.0.0.1"', 'listen_host = "::1"'))
    config = load_config(path)
    check_environment(config, str(path))  # IEC 104 too: the front, not c104, listens (iec104/front.py)
    assert config.iec104.listen_host == config.ocpp.listen_host == "::1"


def test_a_point_table_may_override_one_key(tmp_path: Path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[iec104.points.limit_setpoint]\nunit = "kW"\n')
    config = load_config(path)
    assert (config.iec104.points.limit_setpoint.ioa, config.iec104.points.limit_setpoint.unit) == (100, "kW")


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes("[limits]\n# Gr\xfc\xdfe\nmin_limit_w = 6000.0\n".encode("latin-1"))
    result = run_cli("check-config", str(path))
    assert result.returncode == 2
    assert lines(result.stderr) == [f"error: {path}: (encoding): not UTF-8 at byte 13"]


def test_a_busy_port_at_start_is_one_line_naming_it(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = loopback_config(tmp_path)
        path.write_text(
            path.read_text().replace(
                '[ocpp]\nlisten_host = "127.0.0.1"\nport = 0',
                f'[ocpp]\nlisten_host = "127.0.0.1"\nport = {port}',
            )
        )
        result = run_cli("run", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    [error] = [line for line in lines(result.stderr) if line.startswith("error:")]
    assert error.startswith(f"error: OCPP listener 127.0.0.1:{port}: ") and "in use" in error


def test_log_options_work_after_the_subcommand(tmp_path: Path) -> None:
    result = run_cli(
        "check-config", "--log-level", "warning", "--log-format", "json", "examples/ocpp809.toml"
    )
    assert result.returncode == 0, result.stderr
