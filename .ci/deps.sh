#!/usr/bin/env bash
# .ci/deps.sh: installs what building, testing, the demo and the benchmark
# need, from Debian's packages (as root).  Sourced by .ci/run, bench/run and
# examples/demo.sh.
set -euo pipefail

paysync_install_deps()
{
	if [ "$(id -u)" != 0 ]; then
		echo "paysync: $0 needs root: it installs Debian packages with apt-get" >&2
		echo "and runs PostgreSQL as user postgres.  Run it as root (bash $0)" >&2
		echo "or, as a user allowed to use sudo: sudo bash $0" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends \
		make gcc pkg-config curl ca-certificates perl \
		postgresql-15 postgresql-server-dev-15 postgresql-15-cron libpq-dev \
		libcurl4-openssl-dev libmicrohttpd-dev libjansson-dev libssl-dev openssl \
		libipc-run-perl python3-psycopg nginx-light >/dev/null
	# node for the JavaScript example; never Debian's npm over another nodejs
	if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
		apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
	fi
}

# What .ci/run needs on top: building the Debian package (pg_buildext,
# debhelper), the 0.2 source from git for the upgrade test, and
# pg_auto_failover for the failover test.
paysync_install_deploy_deps()
{
	apt-get install -y -qq --no-install-recommends \
		dpkg-dev debhelper postgresql-server-dev-all git \
		postgresql-15-auto-failover pg-auto-failover-cli >/dev/null
}

# Copies the tree to a fresh directory owned by postgres (initdb refuses
# root) and prints its path.
paysync_copy_for_postgres()
{
	local src=$1 dest
	dest=$(mktemp -d /tmp/paysync.XXXXXX)
	cp -a "$src"/. "$dest"/
	chown -R postgres:postgres "$dest"
	echo "$dest"
}
