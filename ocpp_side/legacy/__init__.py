"""Legacy "Series 4" units (issue 11): a hello line before the upgrade, then a looser OCPP 1.6.

- ``hello``: the hello line read, the identity made (pure);
- ``dialect``: the unit's frames mended into valid 1.6, each leniency named (pure);
- ``session``: a 1.6 ``StationSession`` behind the dialect (pure);
- ``listener``: the second websockets listener, a ``ServerConnection`` that reads the
  hello first; from then on the unit is served as any 1.6 station (``server.py``).
"""
