"""The real Redis server runs our Lua atomically: one round trip, read-modify-write."""

from __future__ import annotations

import pytest
import redis

pytestmark = pytest.mark.integration

INCR_AND_TTL = """
local total = redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return total
"""


def test_lua_script_updates_atomically_and_sets_ttl(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    assert client.ping()
    script = client.register_script(INCR_AND_TTL)
    key = f"{redis_prefix}:counter"
    assert float(script(keys=[key], args=[1.5, 60])) == 1.5
    assert float(script(keys=[key], args=[2.0, 60])) == 3.5
    assert 0 < client.ttl(key) <= 60
    # EVALSHA after SCRIPT FLUSH still works: redis-py reloads the script on NOSCRIPT.
    client.script_flush()
    assert float(script(keys=[key], args=[0.5, 60])) == 4.0
