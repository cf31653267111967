"""``calinode dashboard``: the URL that logs a browser in to the running node's dashboard.

The command holds the API token (from the home); the browser must not. So it asks the node for
a one-time code (``POST /v1/dashboard/login-code``, valid for a minute, good for one login)
and prints ``http://HOST:PORT/login?t=CODE``, or opens it with ``--open``. The node trades the
code for an HttpOnly session cookie and redirects to ``/``: the address bar then holds no
secret (``node/dashboard/sessions.py``).
"""

from __future__ import annotations

import argparse
import json
import webbrowser
from typing import Any


def add_dashboard_parser(sub: Any) -> None:
    dashboard = sub.add_parser(
        "dashboard", help="print (or --open) a one-time URL that logs a browser in to the "
        "node's web dashboard")
    dashboard.add_argument("--open", dest="open_browser", action="store_true",
                           help="open the URL in the default browser instead of printing it")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from calinode.node.client import CalinodeClient

    with CalinodeClient.from_home(args.home, api=args.api,
                                  token=getattr(args, "token", None)) as client:
        login = client.dashboard_login()
    url = str(login["url"])
    if args.open_browser and webbrowser.open(url):
        text = f"opened the dashboard in a browser (the link logs in once, within " \
               f"{login['expires_in']:.0f} s)"
    else:
        text = (f"{url}\n(open it within {login['expires_in']:.0f} s: it logs one browser in "
                "once; run calinode dashboard again for another)")
    print(json.dumps({"url": url, "expires_in": login["expires_in"]}, indent=2) if args.json
          else text)
    return 0
