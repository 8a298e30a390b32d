"""Package discovery: every ai_memory_sdk subpackage is found, so a new one cannot drop out of the wheel.

The memory agent's templates live at the top of the repository (prompts/) and ship as ai_memory_sdk.prompts.
Everything else is in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["ai_memory_sdk", "ai_memory_sdk.*"]), "ai_memory_sdk.prompts"],
    package_dir={"ai_memory_sdk.prompts": "prompts"},
)
