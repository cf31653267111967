"""The measured rate a model offer advertises (ModelOffer.rate): bounded, typed, optional."""

from __future__ import annotations

import math
from typing import Any

import pytest

from calinode.protocol.capabilities import MAX_RATE, Capabilities
from calinode.protocol.errors import RemoteProtocolError


def offer(**extra: Any) -> dict[str, Any]:
    return {"name": "m", "sha256": "a" * 64, "dim": 384, "pooling": "mean", **extra}


def test_a_rate_round_trips_and_is_optional() -> None:
    caps = Capabilities.from_wire({"embed": [offer(rate=251.5)], "generate": []})
    assert caps.embed[0].rate == 251.5
    assert Capabilities.from_wire(caps.to_wire()) == caps
    plain = Capabilities.from_wire({"embed": [offer()]})
    assert plain.embed[0].rate is None and "rate" not in plain.to_wire()["embed"][0]


@pytest.mark.parametrize("rate", [0, -1.0, math.nan, math.inf, MAX_RATE * 2, "fast", True,
                                  [1.0], {"x": 1}])
def test_a_bad_rate_refuses_the_record(rate: object) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        Capabilities.from_wire({"embed": [offer(rate=rate)]})
    assert "rate" in caught.value.message


def test_a_generation_offer_may_carry_a_rate() -> None:
    caps = Capabilities.from_wire({"generate": [{"name": "g", "sha256": "b" * 64,
                                                 "context_length": 2048, "rate": 30}]})
    assert caps.generate[0].rate == 30
