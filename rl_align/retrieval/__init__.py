"""SCI: a symmetric dual-tower retriever (towers, losses, Ray Train trainer) and its consistent dual-view index."""
