"""The k2 gateway: REST and sandboxed SQL over history ∪ live (``create_app``, ``serve``)."""

from k2.api.app import create_app
from k2.api.server import serve

__all__ = ["create_app", "serve"]
