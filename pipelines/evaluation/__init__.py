"""Ranking metrics (trec_eval-identical, BEIR conventions) for retrieval runs and recommendations alike."""
