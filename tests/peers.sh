#!/bin/sh
# The Debian programs the tests run against, as "program:package" (a program is a command name
# or an absolute path, e.g. /lib/ld-linux.so.2:libc6-i386). `make test` runs this first: as
# root it installs what is missing, otherwise it names the packages in one line and fails.
set -eu

PEERS="mosquitto:mosquitto mosquitto_pub:mosquitto-clients mbpoll:mbpoll socat:socat
       victoria-metrics:victoria-metrics openssl:openssl systemd-analyze:systemd chromium:chromium
       /lib/ld-linux.so.2:libc6-i386"

missing=""
# `make test` creates .venv with python3 -m venv; Debian ships that part of Python apart.
python3 -c 'import ensurepip' 2>/dev/null || missing="python3-venv"
for peer in $PEERS; do
    program=${peer%%:*}
    # /usr/sbin is not on a normal user's PATH, and mosquitto lives there.
    command -v "$program" >/dev/null 2>&1 || [ -e "$program" ] || [ -x "/usr/sbin/$program" ] \
        || missing="$missing ${peer#*:}"
done
missing=${missing# }
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
    echo "make test: the tests need Debian packages: sudo apt-get install $missing" >&2
    exit 1
fi
echo "make test: installing $missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# shellcheck disable=SC2086  # one word per package
apt-get install -y -q --no-install-recommends $missing
