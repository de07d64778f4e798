"""Moves every stream to the server nginx routes it to now, after servers
were added to (or removed from) the upstream list and nginx was reloaded.

    python deploy/move_streams.py --proxy=http://127.0.0.1:8500 \\
        http://127.0.0.1:8501 http://127.0.0.1:8502   # the old servers

For each stream of each old server (`GET /v1/streams`), its state and step
count (and, for a run trained on changes, its last level) are read from
that server and set through the proxy (`POST /v1/streams/{id}/reset` with
`state`, `steps` and `level`): the request lands on the
stream's server under the new hash. When that is another server (the
`X-Lstm-Ctl-Server` header says which answered), the stream is deleted from
the old one. A stream that stays where it is gets its own state again (no
change). With consistent hashing, adding a server to N moves about 1/(N+1)
of the streams. Pause the clients of the streams while this runs (see
docs/serving.md): a step sent to a stream's new server before its state
arrives would start it afresh there, and be overwritten.

Needs the Python standard library only.
"""

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

SERVER_HEADER = "X-Lstm-Ctl-Server"


def call(url, method="GET", body=None, token=None):
    """`(json, server id)` of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.loads(r.read()), r.headers.get(SERVER_HEADER)


def move(proxy, servers, token=None, out=sys.stdout):
    """Moves the streams of `servers` to their servers behind `proxy`;
    returns `(moved, kept)` counts."""
    moved = kept = 0
    for server in servers:
        info, server_id = call(f"{server}/healthz", token=token)
        ids, _ = call(f"{server}/v1/streams", token=token)
        for sid in ids["streams"]:
            path = f"/v1/streams/{urllib.parse.quote(sid, safe='')}"
            state, _ = call(f"{server}{path}/state", token=token)
            body = {k: state[k] for k in ("state", "steps", "level")
                    if k in state}  # level: a changes run's streams only
            _, landed = call(f"{proxy}{path}/reset", "POST", body,
                             token=token)
            if landed != server_id:
                call(f"{server}{path}", "DELETE", token=token)
                moved += 1
            else:
                kept += 1
        print(f"{server}: {len(ids['streams'])} streams checked", file=out)
    print(f"moved {moved} streams, {kept} stayed", file=out)
    return moved, kept


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--proxy", required=True, help="nginx, e.g. "
                   "http://127.0.0.1:8500")
    p.add_argument("--token_file", default=None, help="the servers' "
                   "--auth_token_file")
    p.add_argument("servers", nargs="+", help="the servers that held the "
                   "streams before the change, e.g. http://127.0.0.1:8501")
    args = p.parse_args()
    token = None
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
    try:
        move(args.proxy.rstrip("/"), [s.rstrip("/") for s in args.servers],
             token)
    except urllib.error.URLError as e:
        print(f"move_streams.py: error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
