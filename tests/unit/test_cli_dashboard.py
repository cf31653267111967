"""``calinode dashboard``: prints the one-time login URL the node minted, or opens it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from calinode.node.cli import dashboard
from calinode.node.cli.main import main
from calinode.node.client import CalinodeClient

URL = "http://127.0.0.1:7412/login?t=abc"


@pytest.fixture
def minted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def dashboard_login(self: CalinodeClient) -> dict[str, Any]:
        calls.append(self.api)
        return {"code": "abc", "url": URL, "expires_in": 60.0}

    monkeypatch.setattr(CalinodeClient, "dashboard_login", dashboard_login)
    return calls


def test_prints_the_url_by_default(minted: list[str], capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(dashboard.webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["dashboard", "--api", "127.0.0.1:7412", "--token", "t"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == URL and "60 s" in out
    assert opened == [] and minted == ["127.0.0.1:7412"]


def test_json_and_open(minted: list[str], capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    opened: list[str] = []
    monkeypatch.setattr(dashboard.webbrowser, "open", lambda url: opened.append(url) or True)
    assert main(["dashboard", "--json", "--api", "127.0.0.1:7412", "--token", "t"]) == 0
    assert json.loads(capsys.readouterr().out) == {"url": URL, "expires_in": 60.0}
    assert main(["dashboard", "--open", "--api", "127.0.0.1:7412", "--token", "t"]) == 0
    assert opened == [URL]
    assert "opened the dashboard" in capsys.readouterr().out


def test_open_without_a_browser_prints_the_url(minted: list[str],
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dashboard.webbrowser, "open", lambda url: False)
    assert main(["dashboard", "--open", "--api", "127.0.0.1:7412", "--token", "t"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == URL
