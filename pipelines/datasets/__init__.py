"""Converters from public dataset formats to regkit's parquet / BEIR layouts, and the bundled demo data."""
