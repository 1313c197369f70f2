"""The edge: HTTP and WebSocket routes, wire protocol, encoding, auth, errors, settings and CLI."""
