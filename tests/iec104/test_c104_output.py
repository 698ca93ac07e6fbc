"""c104's own output (C++ std::cerr / std::cout) goes through logging, in the gateway process only.

Run in a child process: routing changes fd 1 and fd 2 of the whole process, which pytest's
own capture must not see.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

CHILD = textwrap.dedent(
    """
    import asyncio, logging, os, sys
    import c104
    from iec104.c104_output import route_library_output
    from iec104.master import Iec104Master

    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, format="LOG %(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncio").setLevel(logging.WARNING)

    async def selects(port: int) -> None:
        async with Iec104Master("127.0.0.1", port) as master:
            for _ in range(20):  # c104 prints one line per select to a DIRECT point
                assert not (await master.send_setpoint(100, 1.0, select=True)).positive

    with route_library_output():
        server = c104.Server(ip="127.0.0.1", port=int(sys.argv[1]))
        server.add_station(common_address=1).add_point(io_address=100, type=c104.Type.C_SE_NC_1)
        server.start()
        try:
            asyncio.run(selects(server.port))
        finally:
            server.stop()
        os.write(1, b"a line on fd 1\\n")
        print("python's own stdout")
        logging.getLogger("gateway").warning("python's own log line")
    os.write(2, b"fd 2 after the routing\\n")
    """
)


def test_c104_lines_become_rate_limited_log_records_and_python_output_is_untouched(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(script), str(port)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    err = done.stderr.splitlines()
    select_lines = [line for line in err if line.endswith("Failed to select point in DIRECT command mode")]
    assert 1 <= len(select_lines) <= 5, err
    assert all(line.startswith("LOG WARNING c104: [c104.Point]") for line in select_lines)
    assert any("more line(s) like the last from [c#" in line for line in err), err  # the count, at the end
    assert "LOG DEBUG c104: a line on fd 1" in err
    assert "LOG WARNING gateway: python's own log line" in err
    assert err[-1] == "fd 2 after the routing"
    assert done.stdout.splitlines() == ["python's own stdout"]
