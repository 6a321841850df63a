#!/bin/sh
# Build the memberlist interop peer offline from Debian's Go sources.
#   build.sh OUTPUT_BINARY
# Needs the Debian packages golang-go and golang-github-hashicorp-memberlist-dev
# (`nox -s interop` installs them). GOPATH mode: no module proxy, no network.
set -eu
out=${1:?usage: build.sh OUTPUT_BINARY}
here=$(cd "$(dirname "$0")" && pwd)
gocode=/usr/share/gocode
if ! command -v go >/dev/null 2>&1 || [ ! -d "$gocode/src/github.com/hashicorp/memberlist" ]; then
    echo "memberlist interop peer needs golang-go and golang-github-hashicorp-memberlist-dev;" \
         "run 'nox -s interop' (it installs them with apt-get)" >&2
    exit 3
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src/mlpeer"
cp "$here/main.go" "$work/src/mlpeer/"
cd "$work/src/mlpeer"
GOPATH="$work:$gocode" GO111MODULE=off GOPROXY=off GOFLAGS= GOCACHE="${GOCACHE:-$work/cache}" \
    go build -o "$out" .
