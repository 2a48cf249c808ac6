"""Reward models (ranker) and Ray reward actors — filled in by the ranker issue."""
