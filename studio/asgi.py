"""ASGI entry point: HTTP through Django, websockets through Channels (uvicorn serves both; studio.up starts it)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "studio.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry ready)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from studio.consumers import DatabaseAwayGuard  # noqa: E402
from studio.routing import websocket_urlpatterns  # noqa: E402

# The guard: a handshake while the database is away (the auth middleware reads the session) is closed with 1013.
websockets = DatabaseAwayGuard(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))
application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,  # static files too: WhiteNoise in the middleware (studio.settings)
        "websocket": AllowedHostsOriginValidator(websockets),
    }
)
