"""Evaluation: metrics (revisited-protocol AP, mP@k), datasets (Oxford/Paris, class folders,
toy), run (describe, re-rank, score)."""
