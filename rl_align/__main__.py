"""`python -m rl_align ...` — the same CLI as `rl-align` (and the `ray job submit` entrypoint)."""

from rl_align.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
