"""Per-key adaptive thresholds and alert episodes, kept in Redis and shared by every worker.

One Lua script (``verdicts.lua``) judges a whole micro-batch in one round trip; ``script.py`` is
the only Python that speaks its argument and reply format (docs/thresholds.md).
"""
