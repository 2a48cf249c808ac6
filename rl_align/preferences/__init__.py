"""Preference data for DPO-family alignment (``rl-align dpo build-pairs``): positives, negatives, provenance."""

from rl_align.preferences.pairs import PreferenceTable, build_pairs, load_or_build, read_table

__all__ = ["PreferenceTable", "build_pairs", "load_or_build", "read_table"]
