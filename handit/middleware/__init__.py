"""Inbound stage: web frameworks' requests -> one session each (ASGI and WSGI middleware)."""
from __future__ import annotations

from .asgi import HanditASGIMiddleware
from .wsgi import HanditWSGIMiddleware

__all__ = ["HanditASGIMiddleware", "HanditWSGIMiddleware"]
