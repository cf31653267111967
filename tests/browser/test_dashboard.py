"""The dashboard in a real browser (headless Chromium of the distribution) against a 3-node
swarm of real daemons: the login link leaves no code in the URL, the peers appear, a search
returns hits with score, shard and peer, an ask streams its answer with numbered sources, and
a killed node turns DEAD on the page.

Screenshots go to the test's tmp_path (and to ``$CALINODE_SCREENSHOT_DIR`` when set: the
README's picture).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import Daemon, Swarm, run_cli, shards_converged, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.integration]

#: Safety nets only (never a timing assertion): the page polls every second.
PAGE_WAIT_MS = 60_000

DOCS = [
    {"_id": "wing", "title": "Wings in a slipstream",
     "text": "The lift of a wing immersed in a propeller slipstream rises with the "
             "slipstream velocity; the wing tips see less of it than the root."},
    {"_id": "boundary", "title": "Turbulent boundary layers",
     "text": "A turbulent boundary layer on a flat plate thickens downstream; skin friction "
             "falls slowly with the Reynolds number."},
    {"_id": "heat", "title": "Heat transfer at hypersonic speed",
     "text": "At hypersonic speeds the stagnation point heat transfer grows with the cube of "
             "the flight velocity, so blunt noses are used to spread the heat."},
    {"_id": "buckling", "title": "Buckling of thin cylinders",
     "text": "Thin cylindrical shells under axial compression buckle at loads far below the "
             "classical prediction because of small initial imperfections."},
    {"_id": "flutter", "title": "Panel flutter",
     "text": "Panel flutter is a self-excited oscillation of a skin panel exposed to "
             "supersonic flow on one side."},
    {"_id": "nozzle", "title": "Supersonic nozzles",
     "text": "A convergent-divergent nozzle accelerates a gas to supersonic speed when the "
             "pressure ratio across it is large enough."},
]


def alive_index_peers(daemon: Daemon, want: int) -> bool:
    peers = daemon.peers()
    return sum(1 for p in peers.values()
               if (p["self"] or p["alive"]) and p["capabilities"]["index"]) >= want


def shoot(page: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    target = os.environ.get("CALINODE_SCREENSHOT_DIR")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def test_dashboard_shows_the_swarm_searches_asks_and_sees_a_node_die(
    swarm: Swarm, prepared_models: Path, browser: Any, tmp_path: Path
) -> None:
    marks = [("start", time.monotonic())]
    # n1 embeds and generates (the page's node); n2 and n3 host replicas only
    n1 = swarm.daemon("n1", models=prepared_models).start("--index", "--threads", "1")
    n2, n3 = swarm.daemon("n2"), swarm.daemon("n3")
    with ThreadPoolExecutor(2) as starting:  # the two start (and load nothing) side by side
        list(starting.map(lambda d: d.start("--index", "--bootstrap", n1.addr), (n2, n3)))
    wait_for(lambda: alive_index_peers(n1, 3), 60, "n1 sees three index peers")
    n1.api("create_collection", "docs", shards=4, replicas=2)
    ingested = n1.api("ingest", "docs", DOCS)
    assert not ingested["failed"], ingested
    wait_for(lambda: shards_converged(n1, "docs", 2), 60, "every shard on two replicas")

    marks.append(("swarm ready", time.monotonic()))
    login = run_cli("dashboard", "--json", "--home", str(n1.home))
    url = json.loads(login.stdout)["url"]
    assert "/login?t=" in url

    context = browser.new_context(viewport={"width": 1280, "height": 1100})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.set_default_timeout(PAGE_WAIT_MS)
    page.goto(url)
    # the code is spent and gone from the address bar; the session is an HttpOnly cookie
    assert page.url.endswith("/") and "t=" not in page.url, page.url
    cookies = context.cookies()
    assert [c["httpOnly"] and c["sameSite"] == "Strict" for c in cookies] == [True]

    # the peers appear: n1 itself and its two peers alive
    for daemon, state in ((n1, "SELF"), (n2, "ALIVE"), (n3, "ALIVE")):
        page.wait_for_selector(f'#peers tr[data-peer="{daemon.peer_id}"][data-state="{state}"]')
    row = page.locator(f'#peers tr[data-peer="{n1.peer_id}"]')
    assert "minilm-l6-int8" in row.inner_text() and "smollm2-135m" in row.inner_text()
    assert page.locator("#topology g.node").count() == 3
    # who is connected to whom: n2-n3 too, which only their records tell n1
    between = " ".join(sorted((n2.peer_id, n3.peer_id)))
    page.wait_for_selector(f'#topology .link.connected[data-link="{between}"]')
    assert page.locator("#topology .link.connected").count() == 3
    # the shard map: 4 shards, every one synced on (at least) its two replicas
    page.wait_for_function(  # a function, not an expression: the page's CSP forbids eval
        """() => {
            const rows = [...document.querySelectorAll('#shard-map tbody tr')];
            return rows.length === 4
                && rows.every((r) => r.querySelectorAll('td[data-health=synced]').length >= 2);
        }""")
    assert "6 documents" in page.inner_text("#collection-summary")

    marks.append(("peers shown", time.monotonic()))
    # a search returns hits with score, shard and peer
    page.fill("#query", "lift of a wing in a propeller slipstream")
    page.click("#search-button")
    page.wait_for_selector("#hits li.hit")
    first = page.locator("#hits li.hit").first.inner_text()
    assert "Wings in a slipstream" in first and "score" in first and "shard" in first, first
    assert "embedded on the node" in page.inner_text("#embedded-by")
    keys = "(hits) => hits.map((h) => h.dataset.key)"
    by_node = page.eval_on_selector_all("#hits li.hit", keys)
    # the same search embedded in the browser (onnxruntime-web, the node's model file, cached
    # by sha256): the page says which side embedded, and the hits are the node's
    page.check("#embed-in-browser")
    page.click("#search-button")
    page.wait_for_function(
        "() => document.getElementById('embedded-by').dataset.side === 'browser'",
        timeout=180_000)
    assert "embedded in this browser" in page.inner_text("#embedded-by")
    by_browser = page.eval_on_selector_all("#hits li.hit", keys)
    assert by_browser == by_node and len(by_node) > 0, (by_browser, by_node)
    shoot(page, tmp_path, "dashboard-browser-embedding")
    page.uncheck("#embed-in-browser")

    marks.append(("search", time.monotonic()))
    # an ask streams its answer (several pieces arrive before the end), then its sources
    page.fill("#query", "What happens to a wing in a propeller slipstream?")
    page.click("#ask-button")
    page.wait_for_selector('#answer[data-state="done"]', timeout=120_000)
    pieces = page.evaluate("() => document.getElementById('answer').childNodes.length")
    answer = page.inner_text("#answer")
    assert pieces >= 2 and answer.strip(), (pieces, answer)
    assert page.locator("#sources li").count() >= 1
    marks.append(("ask", time.monotonic()))
    # the activity charts saw the work n1 served: the query embeddings and a generation with
    # tokens always (n1 is the only model host), shard searches when n1 is the first holder
    # of a shard (placement by peer id: not every run), and the legend names every kind
    # n1's counters hold
    counters = page.evaluate("async () => (await (await fetch('/v1/activity')).json()).kinds")
    assert {"embed", "generate"} <= set(counters), counters
    assert counters["generate"]["tokens"] > 0, counters
    page.wait_for_function(
        "(kinds) => kinds.every((k) => document.getElementById('legend-jobs')"
        ".textContent.includes(k))", arg=sorted(counters))
    shoot(page, tmp_path, "dashboard")

    # a chat with the generation model streams (server-sent events), while a killed node
    # turns DEAD on the page
    page.select_option("#chat-model", "smollm2-135m")
    page.fill("#chat-input", "Say hello in five words.")
    page.click("#chat-button")
    n3.kill()
    page.wait_for_selector(f'#peers tr[data-peer="{n3.peer_id}"][data-state="DEAD"]')
    page.wait_for_selector(f'#topology g.node.dead[data-peer="{n3.peer_id}"]')
    marks.append(("dead shown", time.monotonic()))
    page.wait_for_selector('#chat-log .msg.assistant[data-state="done"]', timeout=120_000)
    assert page.inner_text("#chat-log .msg.assistant").strip()
    assert page.inner_text("#chat-log .msg.user") == "Say hello in five words."
    marks.append(("chat", time.monotonic()))
    shoot(page, tmp_path, "dashboard-dead-peer")
    print(" ".join(f"{name} {t - marks[i][1]:.1f}s" for i, (name, t) in enumerate(marks[1:])))
    assert not problems, problems

    # logging out ends the session: the page is the login hint again, the API refuses
    page.click("#logout")
    page.wait_for_selector("text=This browser is not logged in")
    assert page.evaluate("async () => (await fetch('/v1/status')).status") == 401
    context.close()
