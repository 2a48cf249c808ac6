"""The SID policy: an HF-format causal LM over the catalog's SID vocabulary, prompts, SFT."""
