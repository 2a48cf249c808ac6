"""The alignment controller (rl-align rl)."""
