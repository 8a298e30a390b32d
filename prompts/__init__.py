"""Jinja2 templates of the memory agent (shipped inside the package)."""
