"""Memory for any assistant through the Model Context Protocol (``ai-memory mcp``; needs the ``mcp`` extra).

Named ``mcp_server`` so that it never shadows the ``mcp`` SDK package.
"""

from ._scope import Scope, block_uri, parse_block_uri
from .server import WATCH_INTERVAL, MemoryServer

__all__ = ["WATCH_INTERVAL", "MemoryServer", "Scope", "block_uri", "parse_block_uri"]
