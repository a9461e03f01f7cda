"""Readers for the study's external datasets (RoAD: `road.py`), returning plain pandas frames."""
