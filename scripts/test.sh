#!/usr/bin/env bash
# The test command (README.md and .ci/run call exactly this): installs what the tests need on a
# fresh Debian/Ubuntu machine (mosquitto, its clients, openssl, prometheus, chromium; Python tools in a venv,
# kinesalite from npm), then checks formatting and lints
# and runs every test against real brokers on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
command -v mosquitto_sub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v stdbuf >/dev/null 2>&1 || missing+=(coreutils)
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing test dependencies: ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Python test tools live in a venv of their own: kubernetes-validate checks the manifests in
# deploy/ offline; moto's server emulates Kinesis, Firehose, S3 and STS, and boto3 (which comes
# with it) reads back what the fleet wrote.
if [ ! -x .venv-tests/bin/kubernetes-validate ] || [ ! -x .venv-tests/bin/moto_server ]; then
  echo "installing test dependencies: kubernetes-validate, moto[server] (pip, in .venv-tests)" >&2
  python3 -m venv .venv-tests
  .venv-tests/bin/pip install --quiet --disable-pip-version-check kubernetes-validate==1.37.0 'moto[server]==5.2.5'
fi
# kinesalite, a Kinesis emulator that splits shards as Kinesis does (moto does not), from npm.
if [ ! -d .node-tests/node_modules/kinesalite ]; then
  echo "installing test dependencies: kinesalite (npm, in .node-tests)" >&2
  mkdir -p .node-tests
  npm install --prefix .node-tests --no-audit --no-fund --silent kinesalite@3.3.3 >/dev/null
fi
# The packaged mosquitto starts a system-wide broker on port 1883 on some systems; the tests
# start their own brokers on free loopback ports and do not need or touch it.

cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
