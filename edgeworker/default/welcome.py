"""Handlers of the bundled default config: the welcome page and /hello."""

import edgeworker

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Welcome to edgeworker</title>
<style>body{{font-family:system-ui,sans-serif;max-width:44em;margin:3em auto;line-height:1.5;color:#222}}
code{{background:#f3f3f3;padding:.1em .3em}}</style></head>
<body>
<h1>Welcome to edgeworker</h1>
<p>If you see this page, edgeworker is installed and working: a master process with
{workers} gevent workers, Python handlers at every request phase, and shared memory between them.</p>
<p>This page was served by worker <b>{worker}</b> (pid {pid}); the workers have served
<b>{visits}</b> visits to this page since the server started (a shared-dict <code>incr</code>).</p>
<ul>
<li><a href="/hello">/hello</a> &mdash; a Python content handler</li>
<li><a href="/status">/status</a> &mdash; the live dashboard
(<a href="/status.json">/status.json</a>, <a href="/metrics">/metrics</a> for Prometheus)</li>
</ul>
<p>Next: copy an example from <code>config/examples/</code> and run
<code>edgeworker run -c your.toml</code>. The README has the tour.</p>
</body></html>
"""


def index(req):
    visits = edgeworker.shared["counters"].incr("welcome:visits", 1, init=0)
    return PAGE.format(
        workers=edgeworker.worker.count,
        worker=edgeworker.worker.id,
        pid=edgeworker.worker.pid,
        visits=visits,
    )


def hello(req):
    return "hello, world\n"
