"""recsys: parquet interaction logs, two-tower / MF-BPR / LightGCN recommenders, FAISS serving."""
