"""Rollout engines (torch, vLLM) and Ray rollout workers — filled in by the policy/RL issues."""
