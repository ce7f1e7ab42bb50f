#!/usr/bin/env bash
# services.sh — make the three servers treasure needs answer on this machine.
#
#   scripts/services.sh ensure   find NATS (with JetStream), Redis and PostgreSQL,
#                                else start private instances from installed
#                                binaries; where binaries are missing, install
#                                them when it can (root or a password-less
#                                sudo, and apt-get or dnf), saying what it
#                                installs, then start them; else say in one
#                                line what to install (exit 1). Creates the
#                                database if missing. Idempotent: a second
#                                run finds what the first started.
#   scripts/services.sh stop     stop the private instances this script started
#                                (never a server it found running).
#
# Where to look comes from the same variables the services read
# (TREASURE_NATS_URL, TREASURE_REDIS_URL, TREASURE_DATABASE_URL, SPEC defaults);
# TREASURE_NATS_PORT, TREASURE_REDIS_PORT and TREASURE_PG_PORT override the port.
# Private instances keep their data, logs and pid files under
# TREASURE_SERVICES_DIR (default: ${TMPDIR:-/tmp}/treasure-services-$UID).
# A server on another host is only checked, never started.
# TREASURE_SERVICES_INSTALL=no never installs anything (only prints the line).
set -euo pipefail

# TREASURE_SERVICES_SBIN and TREASURE_PG_LIB (where Debian keeps PostgreSQL's
# versioned bin folders) exist for the script's own test, which hides the
# machine's servers.
PATH="$PATH:${TREASURE_SERVICES_SBIN-/usr/sbin:/sbin:/usr/local/sbin}"
PG_LIB=${TREASURE_PG_LIB:-/usr/lib/postgresql}

NATS_URL=${TREASURE_NATS_URL:-nats://127.0.0.1:4222}
REDIS_URL=${TREASURE_REDIS_URL:-redis://127.0.0.1:6379/0}
DATABASE_URL=${TREASURE_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/treasure?sslmode=disable}
STATE_DIR=${TREASURE_SERVICES_DIR:-${TMPDIR:-/tmp}/treasure-services-$(id -u)}
WAIT_SECONDS=${TREASURE_SERVICES_WAIT:-30}

say() { printf 'services: %s\n' "$*"; }

# url_part URL DEFAULT_PORT sets U_HOST, U_PORT, U_USER and U_PATH (without the
# leading slash) from a scheme://[user[:pass]@]host[:port][/path][?query] URL.
url_part() {
	local re='^[A-Za-z][A-Za-z0-9+.-]*://(([^:@/]*)(:[^@/]*)?@)?(\[[^]]*\]|[^:/?]*)(:([0-9]+))?(/([^?]*))?'
	if [[ ! $1 =~ $re ]]; then
		return 1
	fi
	U_USER=${BASH_REMATCH[2]}
	U_HOST=${BASH_REMATCH[4]:-127.0.0.1}
	U_HOST=${U_HOST#[}
	U_HOST=${U_HOST%]}
	U_PORT=${BASH_REMATCH[6]:-$2}
	U_PATH=${BASH_REMATCH[8]}
}

is_local() { [[ $1 == 127.* || $1 == localhost || $1 == ::1 ]]; }

# wait_for CHECK ARGS... polls CHECK until it succeeds or WAIT_SECONDS pass.
wait_for() {
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$@"; do
		if ((SECONDS >= deadline)); then
			return 1
		fi
		sleep 0.2
	done
}

# first_bin NAME finds NAME on PATH or in PostgreSQL's versioned bin folders
# (newest first).
first_bin() {
	local p
	if p=$(command -v "$1" 2>/dev/null); then
		printf '%s\n' "$p"
		return 0
	fi
	for p in $(printf '%s\n' "$PG_LIB"/*/bin | sort -t/ -k5 -rn); do
		if [[ -x $p/$1 ]]; then
			printf '%s\n' "$p/$1"
			return 0
		fi
	done
	return 1
}

MISSING=()

# ---------------------------------------------------------------- NATS

# nats_info HOST PORT prints the server's INFO line (its first line on connect).
nats_info() {
	local line
	exec 3<>"/dev/tcp/$1/$2" || return 1
	IFS= read -r -t 3 line <&3 || {
		exec 3<&-
		return 1
	}
	exec 3<&-
	[[ $line == INFO* ]] || return 1
	printf '%s\n' "$line"
}

nats_up() { (nats_info "$1" "$2") >/dev/null 2>&1; }

ensure_nats() {
	local host port info bin dir
	url_part "${NATS_URL%%,*}" 4222 || {
		say "cannot parse TREASURE_NATS_URL=$NATS_URL"
		return 1
	}
	host=$U_HOST
	port=${TREASURE_NATS_PORT:-$U_PORT}
	if info=$(nats_info "$host" "$port" 2>/dev/null); then
		if [[ $info != *'"jetstream":true'* ]]; then
			say "NATS at $host:$port answers but has JetStream off; restart it with -js"
			return 1
		fi
		say "NATS found at $host:$port (JetStream on, $(sed -n 's/.*"version":"\([^"]*\)".*/version \1/p' <<<"$info"))"
		return 0
	fi
	if ! is_local "$host"; then
		say "NATS at $host:$port does not answer (not local, so not started here)"
		return 1
	fi
	if ! bin=$(command -v nats-server); then
		MISSING+=(nats-server)
		return 0
	fi
	dir=$STATE_DIR/nats-$port
	mkdir -p "$dir/store"
	# setsid + nohup: the server outlives this script and its terminal.
	setsid nohup "$bin" -a "$host" -p "$port" -js -sd "$dir/store" \
		-l "$dir/nats.log" -P "$dir/pid" </dev/null >/dev/null 2>&1 &
	if ! wait_for nats_up "$host" "$port"; then
		say "NATS started from $bin but does not answer at $host:$port; see $dir/nats.log"
		return 1
	fi
	say "NATS started at $host:$port (private, JetStream store $dir/store, log $dir/nats.log)"
}

# ---------------------------------------------------------------- Redis

redis_up() { (redis_ping "$@") 2>/dev/null; }

redis_ping() {
	local reply
	if command -v redis-cli >/dev/null 2>&1; then
		reply=$(redis-cli -h "$1" -p "$2" ping 2>/dev/null) || return 1
		[[ $reply == PONG ]]
		return
	fi
	exec 4<>"/dev/tcp/$1/$2" || return 1
	printf 'PING\r\n' >&4
	IFS= read -r -t 3 reply <&4 || {
		exec 4<&-
		return 1
	}
	exec 4<&-
	[[ $reply == +PONG* ]]
}

ensure_redis() {
	local host port bin dir
	url_part "$REDIS_URL" 6379 || {
		say "cannot parse TREASURE_REDIS_URL=$REDIS_URL"
		return 1
	}
	host=$U_HOST
	port=${TREASURE_REDIS_PORT:-$U_PORT}
	if (redis_up "$host" "$port") 2>/dev/null; then
		say "Redis found at $host:$port"
		return 0
	fi
	if ! is_local "$host"; then
		say "Redis at $host:$port does not answer (not local, so not started here)"
		return 1
	fi
	if ! bin=$(command -v redis-server); then
		MISSING+=(redis-server)
		return 0
	fi
	dir=$STATE_DIR/redis-$port
	mkdir -p "$dir"
	"$bin" --daemonize yes --bind "$host" --port "$port" --save "" --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/pid" >/dev/null
	if ! wait_for redis_up "$host" "$port"; then
		say "Redis started from $bin but does not answer at $host:$port; see $dir/redis.log"
		return 1
	fi
	say "Redis started at $host:$port (private, log $dir/redis.log)"
}

# ---------------------------------------------------------------- PostgreSQL

pg_up() {
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -h "$1" -p "$2" -U "$3" -d postgres -t 3
		return
	fi
	psql -h "$1" -p "$2" -U "$3" -d postgres -Atqc 'select 1' >/dev/null 2>&1
}

# as_pg_owner CMD... runs CMD as an unprivileged user when we are root
# (initdb and postgres refuse to run as root).
as_pg_owner() {
	if [[ $(id -u) != 0 ]]; then
		"$@"
	elif command -v runuser >/dev/null 2>&1; then
		runuser -u "$PG_OWNER" -- "$@"
	else
		su -s /bin/sh "$PG_OWNER" -c "$(printf '%q ' "$@")"
	fi
}

# start_debian_cluster PORT starts a Debian-managed cluster configured for PORT.
start_debian_cluster() {
	local ver name cport status
	command -v pg_lsclusters >/dev/null 2>&1 || return 1
	while read -r ver name cport status _; do
		if [[ $cport == "$1" && $status == down* ]]; then
			pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start >/dev/null 2>&1 || return 1
			PG_HOW="started Debian cluster $ver/$name"
			return 0
		fi
	done < <(pg_lsclusters -h 2>/dev/null)
	return 1
}

start_private_postgres() {
	local host=$1 port=$2 user=$3 initdb pg_ctl dir
	if ! initdb=$(first_bin initdb) || ! pg_ctl=$(first_bin pg_ctl); then
		MISSING+=(postgresql)
		return 2
	fi
	PG_OWNER=$(id -un)
	if [[ $(id -u) == 0 ]]; then
		PG_OWNER=postgres
		getent passwd postgres >/dev/null || PG_OWNER=nobody
	fi
	dir=$STATE_DIR/pg-$port
	mkdir -p "$dir"
	chmod 755 "$STATE_DIR"
	if [[ $(id -u) == 0 ]]; then
		chown "$PG_OWNER" "$dir"
	fi
	if ! as_pg_owner test -w "$dir"; then
		say "PostgreSQL: user $PG_OWNER cannot write $dir; set TREASURE_SERVICES_DIR to a folder it can reach"
		return 1
	fi
	if [[ ! -f $dir/data/PG_VERSION ]]; then
		if ! as_pg_owner "$initdb" -D "$dir/data" -U "$user" --auth=trust -E UTF8 --no-sync \
			>"$dir/initdb.log" 2>&1; then
			say "PostgreSQL initdb failed; see $dir/initdb.log"
			return 1
		fi
	fi
	if ! as_pg_owner "$pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t "$WAIT_SECONDS" \
		-o "-p $port -c listen_addresses=$host -k $dir" start >/dev/null 2>&1; then
		say "PostgreSQL failed to start at $host:$port; see $dir/postgres.log"
		return 1
	fi
	printf '%s\n' "$pg_ctl" >"$dir/pg_ctl"
	PG_HOW="started private instance (data $dir/data, log $dir/postgres.log)"
}

ensure_postgres() {
	local host port user db how=found exists
	url_part "$DATABASE_URL" 5432 || {
		say "cannot parse TREASURE_DATABASE_URL (expected postgres://user@host:port/db)"
		return 1
	}
	host=$U_HOST
	port=${TREASURE_PG_PORT:-$U_PORT}
	user=${U_USER:-postgres}
	db=${U_PATH:-treasure}
	if ! command -v psql >/dev/null 2>&1; then
		if first_bin initdb >/dev/null; then
			MISSING+=(postgresql-client)
		else
			MISSING+=(postgresql)
		fi
		return 0
	fi
	if ! pg_up "$host" "$port" "$user" 2>/dev/null; then
		if ! is_local "$host"; then
			say "PostgreSQL at $host:$port does not answer (not local, so not started here)"
			return 1
		fi
		PG_HOW=
		if ! start_debian_cluster "$port"; then
			start_private_postgres "$host" "$port" "$user" || {
				[[ $? == 2 ]] && return 0
				return 1
			}
		fi
		if ! wait_for pg_up "$host" "$port" "$user"; then
			say "PostgreSQL ($PG_HOW) does not answer at $host:$port"
			return 1
		fi
		how=$PG_HOW
	fi
	exists=$(psql -h "$host" -p "$port" -U "$user" -d postgres -Atqc \
		"select 1 from pg_database where datname = '${db//\'/\'\'}'" 2>&1) || {
		say "PostgreSQL at $host:$port refuses user $user: $exists"
		return 1
	}
	if [[ $exists != 1 ]]; then
		if ! createdb -h "$host" -p "$port" -U "$user" "$db" 2>/dev/null; then
			# Lost a race with another creator? Then it exists now.
			exists=$(psql -h "$host" -p "$port" -U "$user" -d postgres -Atqc \
				"select 1 from pg_database where datname = '${db//\'/\'\'}'" 2>/dev/null || true)
			if [[ $exists != 1 ]]; then
				say "PostgreSQL at $host:$port: cannot create database $db"
				return 1
			fi
		fi
		db="$db (created)"
	fi
	if [[ $how == found ]]; then
		say "PostgreSQL found at $host:$port, database $db"
	else
		say "PostgreSQL $how at $host:$port, database $db"
	fi
}

# ---------------------------------------------------------------- commands

# ---------------------------------------------------------------- installing

# The packages of each missing binary, per package manager (MISSING holds
# Debian's names).
pkg_names() {
	local pm=$1 p
	shift
	for p in "$@"; do
		case $pm:$p in
		dnf:redis-server) printf '%s\n' redis ;;
		dnf:postgresql) printf '%s\n' postgresql-server postgresql ;;
		dnf:postgresql-client) printf '%s\n' postgresql ;;
		*) printf '%s\n' "$p" ;;
		esac
	done | awk '!seen[$0]++'
}

# install_line prints the one line a person runs to install MISSING.
install_line() {
	local pm=apt-get
	if ! command -v apt-get >/dev/null 2>&1 && command -v dnf >/dev/null 2>&1; then
		pm=dnf
	fi
	printf '%s install %s' "$pm" "$(pkg_names "$pm" "${MISSING[@]}" | tr '\n' ' ' | sed 's/ $//')"
}

# install_missing installs MISSING with apt-get or dnf, as root or through
# a password-less sudo, after saying what it installs. It returns 1,
# installing nothing, when it may not or cannot.
install_missing() {
	local pm as=() pkgs
	case ${TREASURE_SERVICES_INSTALL:-yes} in no | 0 | false) return 1 ;; esac
	if command -v apt-get >/dev/null 2>&1; then
		pm=apt-get
	elif command -v dnf >/dev/null 2>&1; then
		pm=dnf
	else
		return 1
	fi
	if [[ $(id -u) != 0 ]]; then
		if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
			as=(sudo -n)
		else
			return 1
		fi
	fi
	mapfile -t pkgs < <(pkg_names "$pm" "${MISSING[@]}")
	say "installing ${pkgs[*]} with $pm${as:+ (through sudo)}"
	case $pm in
	apt-get)
		if ! "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}"; then
			# A fresh machine's package lists may be empty or stale.
			"${as[@]}" apt-get update -q &&
				"${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" ||
				return 1
		fi
		;;
	dnf)
		"${as[@]}" dnf install -y -q "${pkgs[@]}" || return 1
		;;
	esac
	hash -r
}

# ensure [nats] [redis] [postgres]: the named servers, all three by default
# (the demo embeds its own JetStream and asks for redis and postgres only).
ensure() {
	local rc=0 want=" ${*:-nats redis postgres} "
	mkdir -p "$STATE_DIR"
	ensure_each() {
		if [[ $want == *" nats "* ]]; then ensure_nats || rc=1; fi
		if [[ $want == *" redis "* ]]; then ensure_redis || rc=1; fi
		if [[ $want == *" postgres "* ]]; then ensure_postgres || rc=1; fi
	}
	ensure_each
	if ((${#MISSING[@]})); then
		local line
		line=$(install_line)
		if install_missing; then
			# What was found or started before is found again.
			MISSING=()
			rc=0
			ensure_each
			if ((${#MISSING[@]} == 0)); then
				return "$rc"
			fi
			line=$(install_line)
			say "still missing ${MISSING[*]} after installing"
		fi
		say "missing ${MISSING[*]}: install with '$line' and run again"
		return 1
	fi
	return "$rc"
}

stop() {
	local d pid
	[[ -d $STATE_DIR ]] || return 0
	for d in "$STATE_DIR"/nats-* "$STATE_DIR"/redis-*; do
		[[ -f $d/pid ]] || continue
		pid=$(<"$d/pid")
		if kill "$pid" 2>/dev/null; then
			say "stopped ${d##*/} (pid $pid)"
		fi
		rm -f "$d/pid"
	done
	for d in "$STATE_DIR"/pg-*; do
		[[ -f $d/pg_ctl && -f $d/data/postmaster.pid ]] || continue
		PG_OWNER=$(stat -c %U "$d/data")
		if as_pg_owner "$(<"$d/pg_ctl")" -D "$d/data" -m fast -w stop >/dev/null 2>&1; then
			say "stopped ${d##*/}"
		fi
	done
}

case ${1:-} in
ensure)
	shift
	for svc in "$@"; do
		case $svc in nats | redis | postgres) ;; *)
			echo "usage: $0 ensure [nats] [redis] [postgres]" >&2
			exit 2
			;;
		esac
	done
	ensure "$@"
	;;
stop) stop ;;
*)
	echo "usage: $0 ensure [nats] [redis] [postgres] | stop" >&2
	exit 2
	;;
esac
