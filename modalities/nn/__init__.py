"""Shared network blocks every modality builds from."""
