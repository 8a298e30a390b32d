#!/usr/bin/env bash
# The HTTP API with nothing but curl: a key, a batch of messages, its run, the learned blocks, a search.
#
# Start a server first, in another terminal (pip install 'ai-memory-sdk[server]'):
#     ai-memory serve --path memory.db
# then run this walkthrough against it:
#     bash examples/server_curl.sh memory.db [http://127.0.0.1:8420]
#
# Every route is documented at $URL/docs (send the key) and in docs/server.md.
set -euo pipefail

STORE=${1:?usage: bash examples/server_curl.sh STORE [URL]}
URL=${2:-http://127.0.0.1:8420}
AI_MEMORY=${AI_MEMORY:-ai-memory}  # the command (e.g. .venv/bin/ai-memory)
json() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }

echo "== 1. a key for a tenant of its own (printed once, as the last line; only its hash is stored)"
NAME="curl-demo-$$"
KEY=$("$AI_MEMORY" keys create "$NAME" --path "$STORE" | tail -n 1)
AUTH="Authorization: Bearer $KEY"
echo "key for '$NAME': ${KEY:0:8}..."

echo "== 2. add a conversation for alice (202: stored durably, its run queued)"
RUN=$(curl -sS --fail-with-body -X POST "$URL/v1/subjects/alice/messages" \
  -H "$AUTH" -H "Content-Type: application/json" -H "X-Request-ID: curl-demo-add" \
  -d '{
    "messages": [
      {"role": "user", "content": "Hi! My name is Alice and I live in Lisbon."},
      {"role": "assistant", "content": "Nice to meet you, Alice!"},
      {"role": "user", "content": "I love sailing on weekends."}
    ],
    "archive": true,
    "default_blocks": [
      {"label": "human", "description": "Details about the human user you are speaking to.", "limit": 10000},
      {"label": "summary", "description": "A short (1-2 sentences) running summary of the conversation.", "limit": 1000}
    ]
  }' | json '["run_id"]')
echo "run: $RUN"

echo "== 3. wait for the run (a long poll: answers as soon as it ends, or after 25 s with the run as it is)"
STATUS=$(curl -sS --fail-with-body "$URL/v1/runs/$RUN/wait?timeout=25" -H "$AUTH" | json '["status"]')
echo "status: $STATUS"

echo "== 4. the learned blocks"
curl -sS --fail-with-body "$URL/v1/subjects/alice/blocks" -H "$AUTH" \
  | python3 -c 'import json, sys; [print("<%s> %r" % (b["label"], b["value"])) for b in json.load(sys.stdin)]'
echo "human block alone:"
curl -sS --fail-with-body "$URL/v1/subjects/alice/blocks/human" -H "$AUTH" | json '["value"]'

echo "== 5. search alice's archived messages (tags [] = every role)"
curl -sS --fail-with-body -X POST "$URL/v1/subjects/alice/search" \
  -H "$AUTH" -H "Content-Type: application/json" -d '{"query": "sailing", "tags": [], "limit": 3}' \
  | python3 -c 'import json, sys; [print("%.3f %s: %s" % (r["score"], r["role"], r["content"])) for r in json.load(sys.stdin)]'

echo "== 6. errors are JSON naming what was wrong"
curl -sS -X POST "$URL/v1/subjects/alice/messages" -H "$AUTH" -H "Content-Type: application/json" \
  -d '{"messages": [{"role": "robot", "content": "beep"}]}'
echo
curl -sS "$URL/v1/subjects/alice/blocks"  # no key: 401
echo

echo "== 7. revoke the key: it gets 401 from now on"
"$AI_MEMORY" keys revoke "$NAME" --path "$STORE"
curl -sS -o /dev/null -w "with the revoked key: HTTP %{http_code}\n" "$URL/v1/subjects/alice/blocks" -H "$AUTH"
