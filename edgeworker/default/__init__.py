"""The bundled default config (``edgeworker run`` with no arguments) and its handlers."""
