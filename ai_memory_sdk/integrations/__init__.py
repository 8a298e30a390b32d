"""Memory inside other libraries.

- ``openai_agents``: ``MemorySession`` (the OpenAI Agents SDK ``Session``,
  stored in the memory's store and learned from) and ``memory_instructions``
  (agent instructions with the subject's context). Needs the ``agents`` extra.
- ``openai_client``: the wrapper behind ``Memory.wrap(client)``: an
  ``openai.OpenAI``/``AsyncOpenAI`` whose calls carry the subject's context and
  feed its memory, failing open.

Nothing is imported here, so the optional dependencies load only when used.
"""
