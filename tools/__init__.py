"""Command-line tools around the asv suite: run it, report it, gate on it."""
