"""Analyses of finished runs: the stratified analysis of reward guidance and the retrieval–validity frontier."""
