"""The care coordinators' web inbox: sign-in, live alerts of their organisation, ack and dismiss.

Entry point the CLI calls: `caremesh.connectors.inbox.app.run_inbox(settings) -> int`.
Modules: `auth` (password hashes, signed sessions, CSRF tokens), `sessions` (who may sign in),
`state` (the fold of alerts and actions), `feed` (the Kafka reader), `actions` (the records of
an ack or dismiss), `i18n` (French and English texts), `pages` (HTML), `web` (HTTP helpers),
`handlers` (request logic) and `app` (routes and uvicorn); `static/` holds the page's HTML, CSS
and JavaScript.
"""

from __future__ import annotations
