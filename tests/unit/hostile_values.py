"""A fixed corpus of hostile values for fuzzing the typed views of peer input.

Hypothesis' recursive strategies cost milliseconds an example, which at the 10 000 examples
per schema that CI runs would take most of the suite's time budget. The values that break
validators are few and known (wrong types, edge numbers, NaN, huge or empty strings, deep or
wide containers, non-str keys), so the fuzz tests draw from this corpus with
``st.sampled_from`` (microseconds) and let Hypothesis combine, place and shrink them.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st

_SCALARS: list[Any] = [
    None, True, False, 0, 1, -1, 2, 7, 255, 1000, 1001, 4096, 65536, 2**31 - 1, 2**31, 2**53,
    2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**63) - 1, 2**70, 0.0, -0.0, 0.5, 2.5, 1e308,
    -1e308, 1e-300, float("nan"), float("inf"), float("-inf"), "", " ", "a", "papers", "m",
    "stop", "0", "-1", "x" * 65, "x" * 4097, "é" * 40, "\x00", "\ud7ff", "../../etc/passwd",
    "12D3KooWInvalid!", "ab" * 32, "AB" * 32, b"", b"\x00", b"x" * 64, b"\xff" * 1025,
]


def _containers(rng: random.Random) -> list[Any]:
    out: list[Any] = [[], {}, [[]], [{}], {"": None}, {1: "x"}, {None: 1}, [None] * 3,
                      list(range(2049)), {str(i): i for i in range(1001)}]
    deep: Any = []
    for _ in range(40):
        deep = [deep]
    out.append(deep)
    deep_map: Any = {}
    for _ in range(40):
        deep_map = {"x": deep_map}
    out.append(deep_map)
    for _ in range(120):  # small random mixes of the scalars
        size = rng.randint(1, 4)
        if rng.random() < 0.5:
            out.append([rng.choice(_SCALARS) for _ in range(size)])
        else:
            out.append({rng.choice(["x", "k", "text", "name", "0"]): rng.choice(_SCALARS)
                        for _ in range(size)})
    return out


CORPUS: list[Any] = _SCALARS + _containers(random.Random(8))

#: One hostile value: a corpus value, or a small int or short text Hypothesis picks.
hostile = st.one_of(st.sampled_from(CORPUS), st.integers(-3, 5000), st.text(max_size=6))
