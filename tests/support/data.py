"""Where the shared benchmark data lives, and the attribution its licence asks for wherever it is used.

The data is read in place from the folder next to the repository (``../shared/data``), never copied.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
LOCOMO_DEV = DATA / "locomo" / "locomo_dev.json"
LOCOMO_ATTRIBUTION = (
    'Data: LoCoMo (snap-research/LoCoMo, Maharana et al., "Evaluating Very Long-Term Conversational '
    'Memory of LLM Agents", ACL 2024), CC BY-NC 4.0, non-commercial benchmark use only.'
)
