"""The web dashboard the node serves on its local API (``http://127.0.0.1:7412/``).

- ``routes.py``: the page, its static files, the login (one-time code -> session cookie) and
  ``GET /v1/activity``; ``node/api/app.py`` mounts them.
- ``sessions.py``: login codes and browser sessions (pure logic; ``node/api/guard.py`` checks
  the cookie with it).
- ``static/``: ``index.html``, ``app.js`` (plain ES modules polling the JSON API, no
  framework, nothing from the internet), ``app.css``; ``embed.js`` (the in-browser embedding)
  is loaded only when present.
"""
