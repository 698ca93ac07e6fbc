"""The 1.6 <-> 2.0.1 translation core (issue 11): pure, driven with payloads alone."""
