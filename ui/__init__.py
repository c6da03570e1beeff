"""Streamlit-side helpers shared by app.py and app_pages/: cached resources and common widgets.

This package is the only place (with app.py and app_pages/) that imports streamlit."""
