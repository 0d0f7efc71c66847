"""Reverse proxying: ``proxy_pass`` to ``[upstream.NAME]`` groups or ``http://host:port``.

- ``schema``: the configuration (location keys, ``[upstream.NAME]``, their checks);
- ``build``: ``make_content(loc, app)``, the location's content handler, and the per-worker
  upstream groups;
- ``handler``: one proxied request; ``client``: upstream connections and response heads;
  ``balancer``, ``pool``, ``resolver``: picking, keeping and finding the upstream servers;
  ``output``: sending the response to the client.
"""
