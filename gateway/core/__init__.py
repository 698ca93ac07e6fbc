"""The limit-arbitration core: pure, no I/O, no clock of its own (time is passed in).

Events in, decisions out (``arbiter``), with the rules it applies in modules of their own:
setpoint validation (``setpoint_rules``), the cap invariant (``ledger``, ``fleet``),
sharing (``allocation``, ``demand``), what survives a restart (``durable``) and the proof
of execution (``compliance``). Everything that touches the world -- the store, the clock,
the event loop, the protocols -- is the shell around it (``gateway/`` outside this
package, ``iec104/``, ``ocpp_side/``); ``tests/core/test_purity.py`` keeps it that way.
"""
