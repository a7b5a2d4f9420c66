"""ASGI entry point: HTTP through Django, websockets through Channels (uvicorn serves both; studio.up starts it)."""

import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry ready)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from studio.consumers import DatabaseAwayGuard  # noqa: E402
from studio.routing import websocket_urlpatterns  # noqa: E402


class TakingTurns:
    """At most `limit` HTTP requests inside Django at once in this process; the others wait their turn
    in the event loop, in the order they came. Django runs each request in a thread of its own: 50
    requests at once would share the interpreter 50 ways and all answer late together (bench/viewers.py:
    the first answer after seconds); in turns, answers leave as they are ready."""

    def __init__(self, app, limit: int):
        self.app = app
        self.turns = asyncio.Semaphore(limit)

    async def __call__(self, scope, receive, send):
        async with self.turns:
            await self.app(scope, receive, send)


# The guard: a handshake while the database is away (the auth middleware reads the session) is closed with 1013.
websockets = DatabaseAwayGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
application = ProtocolTypeRouter(
    {
        # static files too: WhiteNoise in the middleware (studio.settings)
        "http": TakingTurns(django_asgi_app, settings.HTTP_CONCURRENCY),
        "websocket": AllowedHostsOriginValidator(websockets),
    }
)
