"""Hello world: a content handler returns the body."""


def greet(req):
    name = req.args.get("name") or "world"
    req.resp_headers["X-Greeting"] = "1"
    return f"hello, {name}\n"
