"""The web console: pages, forms and websocket consumers (the top layer; nothing imports it)."""
