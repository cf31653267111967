"""Fixtures for node-tier tests: real nodes (libp2p hosts on 127.0.0.1 + HTTP API) inside the
test's trio run."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from calinode.node.config import NodeConfig
from calinode.node.daemon import Node, run_node

StartNode = Callable[..., Any]


def node_config(home: Path, **overrides: Any) -> NodeConfig:
    settings: dict[str, Any] = {
        "listen": ("/ip4/127.0.0.1/tcp/0",),
        "api": "127.0.0.1:0",
        "heartbeat_interval": 0.3,
        "dead_after": 2.0,
        "drop_after": 30.0,
        "no_models": True,
    }
    settings.update(overrides)
    return NodeConfig(home=home, **settings)


@asynccontextmanager
async def open_nodes(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Yields ``start(name, **config_overrides) -> Node``; all nodes stop at exit."""
    async with trio.open_nursery() as nursery:
        scopes: list[trio.CancelScope] = []

        async def start(name: str, **overrides: Any) -> Node:
            config = node_config(tmp_path / name, **overrides)

            async def runner(task_status: trio.TaskStatus[Node]) -> None:
                with trio.CancelScope() as scope:
                    scopes.append(scope)
                    await run_node(config, handle_signals=False, announce=False,
                                   task_status=task_status)

            node: Node = await nursery.start(runner)
            return node

        try:
            yield start
        finally:
            nursery.cancel_scope.cancel()


@pytest.fixture
def bootstrap_of() -> Callable[[Node], str]:
    return lambda node: next(a for a in node.addrs if "/ip4/127.0.0.1/" in a)


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling node state is the point
            await trio.sleep(0.05)
