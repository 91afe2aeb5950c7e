#!/usr/bin/env bash
# Sets up and runs the ledger locally: installs what is missing, starts the
# local nats-server and PostgreSQL (deploy/local/start.sh), builds the ledger
# and the fake Razorpay, starts both, and runs the demo against them: a
# top-up paid through the fake, credited, some email and SMS usage, balances
# and history; then prints the billing console's address with a signed-in
# link for the demo account, and the operations dashboard's. Both keep
# running until Ctrl-C; logs are in .local/.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
./deploy/local/start.sh
# The ledger as it ships (no fake inside), and the fake Razorpay on its own.
cargo build --release --locked -p ledger-cli
cargo build --release --locked -p ledger-gateway-adapter --features fake --bin fake-razorpay

export LEDGER_ADMIN_TOKEN="${LEDGER_ADMIN_TOKEN:-local-admin-token}"
# The ledger's NATS user (deploy/nats/accounts.conf, development password).
export LEDGER_NATS_USER="${LEDGER_NATS_USER:-ledger}"
export LEDGER_NATS_PASSWORD="${LEDGER_NATS_PASSWORD:-ledger-dev}"
export LEDGER_HTTP_ADDR="${LEDGER_HTTP_ADDR:-127.0.0.1:8080}"
fake_addr="${FAKE_RAZORPAY_ADDR:-127.0.0.1:8090}"
# The fake Razorpay's test keys; a real deployment sets its own.
export LEDGER_RAZORPAY_BASE_URL="http://$fake_addr"
export LEDGER_RAZORPAY_KEY_ID="${LEDGER_RAZORPAY_KEY_ID:-rzp_test_fake}"
export LEDGER_RAZORPAY_KEY_SECRET="${LEDGER_RAZORPAY_KEY_SECRET:-fake_secret}"
export LEDGER_RAZORPAY_WEBHOOK_SECRET="${LEDGER_RAZORPAY_WEBHOOK_SECRET:-fake_webhook_secret}"
export LEDGER_FX_USD_INR="${LEDGER_FX_USD_INR:-83.12}"
mkdir -p .local
# The key the ledger signs every append and checkpoint with (kept, so what
# it signed stays verifiable across runs), and its public half for auditors.
[ -s .local/signing.key ] || ./target/release/ledger audit keys --generate local-1 >.local/signing.key
LEDGER_SIGNING_KEY="$(cat .local/signing.key)"
export LEDGER_SIGNING_KEY
export LEDGER_CHECKPOINT_INTERVAL_S="${LEDGER_CHECKPOINT_INTERVAL_S:-2}"
./target/release/ledger audit keys >.local/public-keys.json
# The pages: Checkout's script from the fake, and tokens for the demo
# account's console and for the operations dashboard (new each run; the
# session key is kept, so sessions outlive a restart).
export LEDGER_CONSOLE_CHECKOUT_JS_URL="http://$fake_addr/v1/checkout.js"
random_token() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n'; }
[ -s .local/session.key ] || random_token >.local/session.key
LEDGER_CONSOLE_SESSION_KEY="$(cat .local/session.key)"
export LEDGER_CONSOLE_SESSION_KEY
account="demo-$(date -u +%Y%m%d%H%M%S)"
console_token="$(random_token)"
ops_token="$(random_token)"
cat >.local/pages.toml <<EOF
[[tokens]]
name = "$account-console"
token = "$console_token"
role = "console"
accounts = ["$account"]

[[tokens]]
name = "ops"
token = "$ops_token"
role = "ops"
EOF
export LEDGER_CONFIG="$root/.local/pages.toml"

FAKE_RAZORPAY_KEY_ID="$LEDGER_RAZORPAY_KEY_ID" \
FAKE_RAZORPAY_KEY_SECRET="$LEDGER_RAZORPAY_KEY_SECRET" \
FAKE_RAZORPAY_WEBHOOK_URL="http://$LEDGER_HTTP_ADDR/v1/webhooks/razorpay" \
FAKE_RAZORPAY_WEBHOOK_SECRET="$LEDGER_RAZORPAY_WEBHOOK_SECRET" \
  ./target/release/fake-razorpay "$fake_addr" >>.local/fake-razorpay.log 2>&1 &
fake=$!
./target/release/ledger serve --role all >>.local/ledger.log 2>&1 &
service=$!
trap 'kill $service $fake 2>/dev/null; wait $service $fake 2>/dev/null' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://$LEDGER_HTTP_ADDR/readyz" >/dev/null 2>&1 && break
  kill -0 "$service" 2>/dev/null || { tail -20 .local/ledger.log >&2; exit 1; }
  kill -0 "$fake" 2>/dev/null || { tail -20 .local/fake-razorpay.log >&2; exit 1; }
  sleep 0.2
done
./target/release/ledger demo --url "http://$LEDGER_HTTP_ADDR" --fake-razorpay "http://$fake_addr" \
  --account "$account"
# A signed checkpoint covering the demo, and a proof of the demo account's
# history in it, checked with the public key alone.
sleep "$((LEDGER_CHECKPOINT_INTERVAL_S + 2))"
echo
echo "The newest signed checkpoint (ledger audit checkpoint):"
./target/release/ledger audit checkpoint
./target/release/ledger audit prove --account "$account" --output .local/proof.json
echo "Its inclusion proof for $account (.local/proof.json), checked with the public key alone:"
./target/release/ledger audit verify-proof --file .local/proof.json --public-key .local/public-keys.json
echo
echo "The ledger is running on http://$LEDGER_HTTP_ADDR (admin token: \$LEDGER_ADMIN_TOKEN),"
echo "the fake Razorpay on http://$fake_addr."
echo
echo "Billing console for $account (the link signs in; the token stays in the fragment):"
echo "  http://$LEDGER_HTTP_ADDR/console/sign-in#token=$console_token"
echo "Operations dashboard:"
echo "  http://$LEDGER_HTTP_ADDR/ops/sign-in#token=$ops_token"
echo "Ctrl-C stops them; deploy/local/stop.sh stops nats-server and PostgreSQL."
wait "$service"
