"""Verifies logged webhook requests with the reference Standard Webhooks library.

Usage: verify.py LOG SECRETS_JSON, where SECRETS_JSON maps a path to the secrets that
must each verify its requests. Prints one JSON line per request: path, webhook-id,
the payload's type, and for each secret whether it verified.
"""

import base64
import json
import sys

from standardwebhooks.webhooks import Webhook

secrets = json.load(open(sys.argv[2]))
for line in open(sys.argv[1]):
    r = json.loads(line)
    body = base64.b64decode(r["body"])
    results = {}
    payload = None
    for secret in secrets.get(r["path"], []):
        try:
            payload = Webhook(secret).verify(body, r["headers"])
            results[secret] = True
        except Exception as e:  # noqa: BLE001 - the reason is reported
            results[secret] = str(e)
    print(json.dumps({
        "path": r["path"],
        "status": r["status"],
        "id": r["headers"].get("webhook-id"),
        "type": payload and payload.get("type"),
        "keys": sorted(payload.keys()) if payload else None,
        "verified": results,
    }))
