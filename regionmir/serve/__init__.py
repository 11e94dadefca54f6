"""`regionmir serve`: the store and models held open behind a JSON API, and the client `search` uses.

Modules: ``engine`` (what the server holds and does), ``app`` (the routes; imports fastapi),
``run`` (socket, token rule, uvicorn), ``discovery`` (the file that tells `search` a server
runs for its home) and ``client`` (the standard-library client). Only ``app`` and ``run``
import the server stack, so ``import regionmir.serve.client`` stays light.
"""

from regionmir.serve.discovery import ServerInfo, find

__all__ = ["ServerInfo", "find"]
