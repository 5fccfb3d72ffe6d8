"""Configs as code (ml_collections)."""
