"""coredis under trio (gateway/broker/client.py): it really runs on trio, a blocked XREAD is
cancelled cleanly, and an unreachable Redis is BROKER_UNAVAILABLE with a reason, then usable
again once it is back, without a new client."""

from __future__ import annotations

from functools import partial

import pytest
import sniffio
import trio

from gateway.broker import BrokerClient
from gateway.config import settings_from_env
from gateway.config.broker import BrokerSettings, broker_from_env, redacted_url
from gateway.errors import BrokerUnavailable, ConfigError
from tests.redis_server import RedisServer


async def test_coredis_runs_under_trio(redis_server: RedisServer) -> None:
    assert sniffio.current_async_library() == "trio"  # anyio (under coredis) runs on trio
    async with BrokerClient(BrokerSettings(redis_server.url, timeout=1)) as broker:
        redis = broker.redis
        assert await broker.call(redis.ping) == b"PONG"
        with trio.move_on_after(0.2) as waited:
            await redis.xread({"nothing": "$"}, block=5000)  # cancelled by trio, not hung
        assert waited.cancelled_caught
        assert await broker.call(partial(redis.incr, "n")) == 1  # the client still works
        assert broker.up and broker.reason is None


async def test_unreachable_redis_is_broker_unavailable_until_it_is_back(
    redis_server: RedisServer,
) -> None:
    redis_server.pause()
    async with BrokerClient(BrokerSettings(redis_server.url, timeout=1)) as broker:
        with pytest.raises(BrokerUnavailable) as failed:
            await broker.call(broker.redis.ping)
        assert failed.value.code == "BROKER_UNAVAILABLE" and failed.value.reason
        assert not broker.up
        with pytest.raises(BrokerUnavailable):
            broker.check()
        redis_server.resume()
        assert await broker.call(broker.redis.ping) == b"PONG"
        assert broker.up


def test_broker_settings_from_the_environment() -> None:
    assert broker_from_env({}) is None
    found = broker_from_env({"GATEWAY_BROKER": "redis://r:6379/0", "GATEWAY_LEADER_LEASE": "2.5"})
    assert found is not None and found.lease == 2.5 and found.url == "redis://r:6379/0"
    assert broker_from_env({}, "redis://cli:1/0") == BrokerSettings("redis://cli:1/0")
    with pytest.raises(ConfigError, match="redis://"):
        broker_from_env({"GATEWAY_BROKER": "http://nope"})
    with pytest.raises(ConfigError, match="RETENTION"):
        broker_from_env({"GATEWAY_BROKER": "redis://r", "GATEWAY_BROKER_RETENTION": "x"})
    assert redacted_url("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    # `serve --broker` is taken over GATEWAY_BROKER; without either, one process.
    env = {"GATEWAY_BROKER": "redis://env:1/0"}
    flag = settings_from_env(env, broker="redis://flag:2/0").broker
    assert flag is not None and flag.url == "redis://flag:2/0"
    assert settings_from_env({}).broker is None
