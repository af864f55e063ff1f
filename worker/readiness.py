"""What keeps the worker from working, in one short line a person can act on.

Driver errors describe a whole topology or a chain of retries in hundreds of characters; what an
operator needs from `dupfinder check` or `/readyz` is which service, where, and what to do.
URLs are shown without their credentials.
"""

from __future__ import annotations

from urllib.parse import urlsplit

#: How to get each service going, by service.
HINTS = {
    "RabbitMQ": (
        "start it (Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install "
        "rabbitmq && brew services start rabbitmq) or set DUPFINDER_AMQP_URL"
    ),
    "MongoDB": "start mongod, or point DUPFINDER_MONGODB_URL at a MongoDB server",
}


def where(url: str) -> str:
    """`host:port` of a URL, without credentials (the URL's scheme when it names several)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "the configured URL"
    if host is None:
        return "the configured URL"
    return f"{host}:{port}" if port else host


def unreachable(service: str, url: str, error: BaseException) -> str:
    """One line: `<service> does not answer at <host:port> (<error type>); <what to do>`."""
    return f"{service} does not answer at {where(url)} ({type(error).__name__}); {HINTS[service]}"
