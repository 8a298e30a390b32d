"""Engines behind ``Memory``: ``local`` (embedded store), ``letta`` (a Letta server), ``remote`` (an ai-memory server)."""
