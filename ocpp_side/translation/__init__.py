"""OCPP 1.6 <-> 2.0.1 translation (issue 11): a pure core, one station at a time.

``api`` holds the types every part shares; ``upward`` translates a 1.6 station's calls
for a 2.0.1 CSMS, ``downward`` the CSMS's 2.0.1 calls for the 1.6 station. The relay
(``ocpp_side/relay.py``) is the shell: it sends what these return and persists the state.
"""
