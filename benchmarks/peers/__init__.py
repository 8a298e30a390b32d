"""The peers ``vs_peers.py`` compares against: their cached virtualenvs, their JSON-lines drivers, the scripted LLM."""
