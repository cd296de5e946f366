#!/bin/sh
# Sytest launcher for `run-sytest.sh --command tests/sytest/launch.sh`: starts ONE
# `myelin serve` from the SYTEST_* environment of sytest's Command plugin.
#
# Sytest starts two of these (server-0 and server-1) so that federation between them is
# tested. Each gets a TLS port that must serve the client, federation and key APIs with the
# certificate sytest signed, a plain-HTTP port (used with --plain-client), an empty data
# directory, the registration shared secret and the server name `localhost:<TLS port>`.
#
#   MYELIN_SYTEST_ROOM_VERSION  default room version of new rooms, default "10": this
#                               sytest snapshot predates room v12 (see the README).
#   MYELIN_SYTEST_LOG_LEVEL     log level of $SYTEST_DATA_DIR/log/myelin.log, default info.
#
# `exec` makes the server the process that receives SIGINT from the plugin, so it shuts
# down cleanly; its stdout/stderr land in work/server-N/server.log.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
: "${SYTEST_SERVER_NAME:?run me from sytest (run-sytest.sh --command)}"

# Everything as MYELIN_* environment variables, which win over any config file; the data
# dir is wiped by the plugin before each start, so myelin writes a fresh myelin.yaml.
export MYELIN_SERVER_NAME="$SYTEST_SERVER_NAME"
export MYELIN_DATA_DIR="$SYTEST_DATA_DIR"
export MYELIN_BIND_ADDRESS=127.0.0.1
export MYELIN_PORT="$SYTEST_HTTP_PORT"
export MYELIN_TLS_PORT="$SYTEST_HTTPS_PORT"
export MYELIN_TLS_CERT="$SYTEST_TLS_CERT"
export MYELIN_TLS_KEY="$SYTEST_TLS_KEY"
export MYELIN_PUBLIC_BASEURL="$SYTEST_PUBLIC_BASEURL"
export MYELIN_REGISTRATION_ENABLED=open
export MYELIN_REGISTRATION_SHARED_SECRET="$SYTEST_REGISTRATION_SHARED_SECRET"
export MYELIN_ALLOW_GUEST_ACCESS=true
export MYELIN_DEFAULT_ROOM_VERSION="${MYELIN_SYTEST_ROOM_VERSION:-10}"
export MYELIN_RATE_LIMIT=false
# Sytest predates Matrix v1.17: its push tests mention users in message bodies only.
export MYELIN_PUSH_LEGACY_MENTION_RULES=true
export MYELIN_DATABASE=sqlite
export MYELIN_LOG_LEVEL="${MYELIN_SYTEST_LOG_LEVEL:-info}"
# URL previews refuse loopback by default; sytest's own web server (the pages of
# tests/51media/20urlpreview.pl) listens on "localhost".
export MYELIN_URL_PREVIEW_IP_RANGE_WHITELIST=127.0.0.1/32,::1/128
# Application service registrations that sytest wrote (only for server-0), from the JSON
# config of the Command plugin; relative paths are relative to sytest's own directory.
if [ -n "${SYTEST_CONFIG:-}" ] && [ -f "$SYTEST_CONFIG" ]; then
  MYELIN_APP_SERVICE_CONFIG_FILES=$(python3 -c '
import json, os, sys
files = json.load(open(sys.argv[1])).get("app_service_config_files") or []
print(",".join(os.path.join(sys.argv[2], f) for f in files))' "$SYTEST_CONFIG" "${SYTEST_DIR:-.}")
  export MYELIN_APP_SERVICE_CONFIG_FILES
  # Sytest's SMTP server (the validation e-mails of 3PIDs), `smtp` {host, port}.
  SMTP=$(python3 -c '
import json, sys
smtp = json.load(open(sys.argv[1])).get("smtp") or {}
print(smtp.get("host", ""), smtp.get("port", ""))' "$SYTEST_CONFIG")
  if [ -n "${SMTP% *}" ]; then
    export MYELIN_SMTP_HOST="${SMTP% *}" MYELIN_SMTP_PORT="${SMTP#* }"
    export MYELIN_SMTP_FROM="myelin@localhost"
  fi
fi
# Sytest's identity server has a self-signed certificate.
export MYELIN_IDENTITY_SERVER_TLS_VERIFY=false
# Outbound HTTPS (push gateways: sytest's test server) trusts sytest's CA; OpenSSL's
# standard variable, read by Python's default TLS context.
if [ -n "${SYTEST_CA_CERT:-}" ]; then export SSL_CERT_FILE="$SYTEST_CA_CERT"; fi

# Single sign-on: sytest's CAS server (its test web server) from the Command plugin's JSON.
if [ -n "${SYTEST_CONFIG:-}" ] && [ -f "$SYTEST_CONFIG" ]; then
  MYELIN_CAS_SERVER_URL=$(python3 -c '
import json, sys
print((json.load(open(sys.argv[1])).get("cas") or {}).get("server_url") or "")' "$SYTEST_CONFIG")
  if [ -n "$MYELIN_CAS_SERVER_URL" ]; then export MYELIN_CAS_SERVER_URL; fi
fi

exec "$REPO/.venv/bin/myelin" serve
