"""Streamlit-side helpers shared by app.py and pages/: cached resources and common widgets.

This package is the only place (with app.py and pages/) that imports streamlit."""
