#!/usr/bin/env bash
# bench/run.sh: Keygate's load benchmark against the floors (bench/allowall,
# an ext_authz server that allows everything, and bench/allowhttp, an HTTP
# server that answers 200 to everything). See bench/README.md.
#
#   bash bench/run.sh [-m lean,http,ghz] [-l 60000] [-c 16] [-n 100000] [-r 3] [-w 5000] [-q 0] [-v valid,unknown,malformed] [-s] [-P]
#
# Everything runs from a temporary directory that is removed on exit, with
# both servers stopped; the only thing left behind is ghz in bench/.tools.
set -euo pipefail

# Pinned so that runs on different days use the same load client (and
# v0.93.0 is the only version the module proxy serves).
readonly GHZ_PKG=github.com/bojand/ghz/cmd/ghz
readonly GHZ_VERSION=v0.93.0
readonly CALL=envoy.service.auth.v3.Authorization.Check

# Kept for the "command:" line: getopts consumes "$@".
args=("$@")
concurrency=16
requests=100000
rounds=3
warmup=5000
rate=0
variant_list=valid,unknown,malformed
floor_args=()
mode_list=lean,http,ghz
lean_requests=60000
pin=1

usage() {
	cat <<EOF
Usage: bash bench/run.sh [-m MODES] [-l LEAN_REQUESTS] [-c CONCURRENCY] [-n REQUESTS] [-r ROUNDS] [-w WARMUP] [-q RATE] [-v VARIANTS] [-s] [-P]

  -m  comma-separated clients and paths (default $mode_list):
      lean  gRPC Checks from bench/lean (answers kept as raw bytes), valid key
      http  /nginx and /forward from bench/lean against the HTTP floor
            (bench/allowhttp), valid key, keep-alive connections
      ghz   gRPC Checks from ghz, the second client (-n, -q, -v, -s)
  -l  requests per measured lean run (default $lean_requests)
  -P  do not pin: by default, on 2 cores or more, the load client runs on
      core 0 and each server on core 1 with GOMAXPROCS=1
  -c  concurrent workers: ghz's and lean gRPC's on one HTTP/2 connection,
      lean HTTP's on as many keep-alive connections (default $concurrency)
  -n  Checks per measured ghz run (default $requests)
  -r  rounds; each round runs the floor then Keygate, per path and variant (default $rounds)
  -w  warm-up Checks before every measured run, not measured (default $warmup; 0: none)
  -q  offered load of the measured runs, Checks per second (ghz --rps): both
      servers get the same load, for latency at equal load; CPU per Check
      is then mostly wake-ups (see bench/README.md) (default $rate: as fast
      as ghz can go)
  -v  comma-separated request variants for Keygate: valid (the allow path),
      unknown (well-formed key never stored: lookup miss), malformed (bad
      checksum: refused before any lookup) (default $variant_list)
  -s  shaped floor: allowall answers with a response of the shape of
      Keygate's allow (same headers and metadata, fixed values), so that
      encoding and the load client's decoding cost the same on both sides
      and the ratios measure Keygate's deciding alone
EOF
}

while getopts ':m:l:Pc:n:r:w:q:v:sh' opt; do
	case $opt in
	m) mode_list=$OPTARG ;;
	l) lean_requests=$OPTARG ;;
	P) pin=0 ;;
	c) concurrency=$OPTARG ;;
	n) requests=$OPTARG ;;
	r) rounds=$OPTARG ;;
	w) warmup=$OPTARG ;;
	q) rate=$OPTARG ;;
	v) variant_list=$OPTARG ;;
	s) floor_args=(-shaped) ;;
	h)
		usage
		exit 0
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
done
shift $((OPTIND - 1))
if (($# > 0)); then
	usage >&2
	exit 2
fi
for flag in l:lean_requests c:concurrency n:requests r:rounds w:warmup q:rate; do
	name=${flag#*:}
	if ! [[ ${!name} =~ ^[0-9]+$ ]] || { [[ $name != warmup && $name != rate ]] && ((${!name} == 0)); }; then
		echo "run.sh: -${flag%%:*} wants a whole number (above 0 but for -w and -q), got '${!name}'" >&2
		exit 2
	fi
done
IFS=, read -r -a modes <<<"$mode_list"
declare -A mode=()
for m in "${modes[@]}"; do
	case $m in
	lean | http | ghz) mode[$m]=1 ;;
	*)
		echo "run.sh: unknown mode '$m' (want lean, http, ghz)" >&2
		exit 2
		;;
	esac
done
((${#mode[@]} > 0)) || {
	echo "run.sh: -m names no mode" >&2
	exit 2
}
IFS=, read -r -a variants <<<"$variant_list"
for v in "${variants[@]}"; do
	case $v in
	valid | unknown | malformed) ;;
	*)
		echo "run.sh: unknown variant '$v' (want valid, unknown, malformed)" >&2
		exit 2
		;;
	esac
done

die() {
	echo "run.sh: $*" >&2
	exit 1
}
for tool in go getconf nproc; do
	command -v "$tool" >/dev/null || die "$tool is needed and not on PATH"
done
[[ -r /proc/self/stat ]] || die "needs /proc (Linux): CPU time and peak memory come from /proc/PID"

root=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)
tools=$root/bench/.tools
ghz=$tools/ghz
clk_tck=$(getconf CLK_TCK)

# The servers must not pick up a token, store or config from the caller's
# environment: the run is only comparable if it is the same every time.
unset "${!KEYGATE_@}"

work=$(mktemp -d "${TMPDIR:-/tmp}/keygate-bench.XXXXXX")
bin=$work/bin
pids=()

# cleanup stops the servers this script started (by pid, nothing else) and
# removes the temporary directory. After a failure it shows the end of the
# servers' logs first, since they are about to be deleted.
cleanup() {
	local rc=$? pid log
	# ghz_pid and lean_pid are set only while a run is under way.
	for pid in ${ghz_pid:-} ${lean_pid:-} ${pids[@]+"${pids[@]}"}; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in ${ghz_pid:-} ${lean_pid:-} ${pids[@]+"${pids[@]}"}; do
		wait "$pid" 2>/dev/null || true
	done
	if ((rc != 0)); then
		for log in "$work"/keygate/serve.log "$work"/allowall.log "$work"/allowhttp.log; do
			if [[ -s $log ]]; then
				echo "--- last lines of ${log##*/}:" >&2
				tail -n 20 "$log" >&2
			fi
		done
	fi
	rm -rf -- "$work"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "# Keygate benchmark"
cmdline=$(printf '%q ' bash "$0" ${args[@]+"${args[@]}"})
echo "command:  ${cmdline% }"
echo "settings: -m $mode_list -l $lean_requests -c $concurrency -n $requests -r $rounds -w $warmup -q $rate -v $variant_list${floor_args[*]:+ -s (shaped floor)}"
echo "go:       $(go version)"
echo "nproc:    $(nproc)"
echo "cpu:      $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
echo "kernel:   $(uname -sr)"
echo "keygate:  $(git -C "$root" describe --always --dirty 2>/dev/null || echo 'unknown (not a git checkout)')"
# Anything else busy on the machine shows in the numbers: say how busy it
# was before and after, so a noisy run can be recognised.
echo "load:     $(cut -d ' ' -f 1-3 /proc/loadavg) (1, 5, 15 min) before the build"

# Pinned, the client and the server under test do not take each other's
# core: each server (the floors and Keygate alike) gets core 1 and one P,
# every load client core 0. The CPU a client burns then slows only itself.
server_pin=()
client_pin=()
if ((pin)); then
	if (($(nproc) < 2)); then
		echo "pinning: off (one core: client and server share it)"
	elif ! command -v taskset >/dev/null; then
		echo "pinning: off (no taskset on PATH)"
	else
		server_pin=(env GOMAXPROCS=1 taskset -c 1)
		client_pin=(taskset -c 0)
		echo "pinning: load clients on core 0; each server on core 1, GOMAXPROCS=1"
	fi
else
	echo "pinning: off (-P)"
fi

mkdir -p "$bin"
(cd "$root" && go build -o "$bin/" ./cmd/keygate ./bench/allowall ./bench/allowhttp ./bench/lean ./bench/report)

# ghz is installed from outside the module (from $work), so that it brings
# its own dependency versions and leaves go.mod and go.sum alone. A binary
# already in bench/.tools is reused only if it was built from the pinned
# version.
ghz_built_from() {
	go version -m "$ghz" 2>/dev/null | awk '$1 == "mod" { print $3 }'
}
if [[ -n ${mode[ghz]:-} ]]; then
	if [[ ! -x $ghz || $(ghz_built_from) != "$GHZ_VERSION" ]]; then
		echo "installing ghz $GHZ_VERSION into bench/.tools" >&2
		(cd "$work" && GOBIN=$tools go install "$GHZ_PKG@$GHZ_VERSION")
	fi
	# (ghz --version prints to stderr, and "dev" for a go-installed binary:
	# the module version is the one that identifies it.)
	echo "ghz:      $(ghz_built_from) (ghz --version: $("$ghz" --version 2>&1))"
fi

# cpu_ticks prints the CPU time (user + system, all threads) a process has
# used so far, in clock ticks. The fields are counted from after the
# command name, which is in parentheses and may hold spaces: utime and
# stime are fields 14 and 15 of /proc/PID/stat, 12th and 13th after it.
cpu_ticks() {
	local stat rest
	local -a f
	stat=$(<"/proc/$1/stat")
	rest=${stat##*) }
	read -r -a f <<<"$rest"
	echo $((f[11] + f[12]))
}

# peak_rss_kb prints a process's peak resident set (VmHWM), in kB.
peak_rss_kb() {
	awk '$1 == "VmHWM:" { print $2 }' "/proc/$1/status"
}

alive() {
	kill -0 "$1" 2>/dev/null
}

# children_cpu_ms sets children_ms to the CPU time, in ms, that this
# shell's finished children have used so far, from the builtin "times".
# It sets a variable instead of printing because it must not run in a
# subshell: a forked child starts with these counters at zero. Around a
# ghz run the difference is ghz's own CPU: what the load client took from
# the server on a small machine.
children_ms=0
children_cpu_ms() {
	local cu cs t
	times >"$work/times"
	{
		read -r _ _
		read -r cu cs
	} <"$work/times"
	children_ms=0
	for t in "$cu" "$cs"; do
		[[ $t =~ ^([0-9]+)m([0-9]+)\.([0-9]{3})s$ ]] || die "times: unexpected '$t'"
		children_ms=$((children_ms + 10#${BASH_REMATCH[1]} * 60000 + 10#${BASH_REMATCH[2]} * 1000 + 10#${BASH_REMATCH[3]}))
	done
}

# --- Keygate, on loopback, with its store in the temp dir -----------------
kgdir=$work/keygate
mkdir -p "$kgdir"
cat >"$kgdir/keygate.yaml" <<'EOF'
# A tier limit no run can reach, so that every valid-key Check takes the
# allow path and none a 429.
rate_limits:
  tiers:
    standard: {requests: 100000000, window: 1s}
  # Off, so that the unknown and malformed runs time the lookup and the
  # checksum rather than the throttle that answers an address after 20
  # failures a minute.
  failed_auth: {requests: -1}
# Denials log at info; at warn nothing is logged per Check.
log: {level: warn}
EOF
# At log level warn Keygate does not say which ports it got, so it is given
# free ones rather than ":0". The metrics are read from the admin listener:
# the metrics listener is off, so that it takes no fixed port.
mapfile -t port < <("$bin/report" ports 3)
((${#port[@]} == 3)) || die "could not find free ports"
kg_grpc=127.0.0.1:${port[0]}
kg_http=127.0.0.1:${port[1]}
kg_admin=127.0.0.1:${port[2]}
KEYGATE_CONFIG=$kgdir/keygate.yaml \
	KEYGATE_STORE=$kgdir/keygate.db \
	KEYGATE_GRPC_LISTEN=$kg_grpc \
	KEYGATE_HTTP_LISTEN=$kg_http \
	KEYGATE_ADMIN_LISTEN=$kg_admin \
	KEYGATE_METRICS_LISTEN=off \
	${server_pin[@]+"${server_pin[@]}"} "$bin/keygate" serve >"$kgdir/serve.log" 2>&1 &
kg_pid=$!
pids+=("$kg_pid")
for ((i = 0; ; i++)); do
	alive "$kg_pid" || die "keygate exited while starting (a port taken meanwhile?)"
	"$bin/keygate" health --addr "$kg_grpc" --timeout 1s >/dev/null 2>&1 && break
	((i < 100)) || die "keygate not SERVING on $kg_grpc after 10s"
	sleep 0.1
done

# A tenant and a tenant-level key, made the way an operator makes them.
export KEYGATE_ADMIN_URL=http://$kg_admin
export KEYGATE_ADMIN_TOKEN_FILE=$kgdir/keygate.admin-token
tenant=$("$bin/keygate" tenants create --name Bench --output json | "$bin/report" field id)
key=$("$bin/keygate" keys create --tenant "$tenant" --name bench --output json | "$bin/report" field key)
mapfile -t derived < <("$bin/report" keys "$key")
((${#derived[@]} == 2)) || die "could not derive the unknown and malformed keys"
declare -A key_of=([valid]=$key [unknown]=${derived[0]} [malformed]=${derived[1]})

# --- the floors -----------------------------------------------------------
# start_floor starts bench/NAME on a free port and sets started_pid and
# started_addr from the "listening ADDR" line it prints.
start_floor() { # name [flags...]
	local name=$1
	shift
	# Created here, so that the loop below never reads a file the server
	# has not opened yet.
	: >"$work/$name.log"
	${server_pin[@]+"${server_pin[@]}"} "$bin/$name" -listen 127.0.0.1:0 "$@" >"$work/$name.log" 2>&1 &
	started_pid=$!
	pids+=("$started_pid")
	started_addr=
	for ((i = 0; ; i++)); do
		alive "$started_pid" || die "$name exited while starting"
		started_addr=$(awk '$1 == "listening" { print $2; exit }' "$work/$name.log")
		[[ -n $started_addr ]] && break
		((i < 100)) || die "$name did not say where it listens after 10s"
		sleep 0.1
	done
}
start_floor allowall ${floor_args[@]+"${floor_args[@]}"}
floor_pid=$started_pid floor_addr=$started_addr
start_floor allowhttp
hfloor_pid=$started_pid hfloor_addr=$started_addr

# request prints the CheckRequest every run sends, with the given key: what
# Envoy sends for GET https://api.example.com/api/v1/assessments, reduced
# to what Keygate reads (the client address included: Envoy always sends
# it, and Keygate parses it on every Check).
request() {
	printf '{"attributes":{"source":{"address":{"socket_address":{"address":"10.1.2.3","port_value":51234}}},"request":{"http":{"method":"GET","path":"/api/v1/assessments","host":"api.example.com","headers":{"x-api-key":"%s"}}}}}' "$1"
}

# ghz_run runs ghz in the background and waits for it: bash runs a trap
# only once the foreground command is done, so with ghz in the foreground a
# SIGTERM or SIGINT sent to this script alone (a CI timeout, kill) would
# wait for the whole run. "wait" returns at once, and cleanup stops ghz.
ghz_pid=
ghz_run() { # addr data requests out [ghz flags...]
	local addr=$1 data=$2 n=$3 out=$4
	shift 4
	${client_pin[@]+"${client_pin[@]}"} "$ghz" --insecure --call "$CALL" -d "$data" -c "$concurrency" -n "$n" -O json -o "$out" "$@" "$addr" &
	ghz_pid=$!
	wait "$ghz_pid"
	ghz_pid=
}

# measure runs one warm-up and one measured ghz run against a server and
# records the run with the server's CPU time during it.
measure() { # server variant round addr pid
	local server=$1 variant=$2 round=$3 addr=$4 pid=$5 data before after client_before client_after
	data=$(request "${key_of[$variant]}")
	alive "$pid" || die "$server is gone"
	if ((warmup > 0)); then
		ghz_run "$addr" "$data" "$warmup" "$work/warmup.json"
	fi
	children_cpu_ms
	client_before=$children_ms
	before=$(cpu_ticks "$pid")
	ghz_run "$addr" "$data" "$requests" "$work/run.json" ${rate_flag[@]+"${rate_flag[@]}"}
	after=$(cpu_ticks "$pid")
	children_cpu_ms
	client_after=$children_ms
	"$bin/report" digest -o "$work/runs.tsv" -server "$server" -variant "$variant" -round "$round" \
		-ticks $((after - before)) -clk-tck "$clk_tck" -client-ms $((client_after - client_before)) "$work/run.json"
	# One entry per request in ghz's JSON: not kept.
	rm -f -- "$work/run.json" "$work/warmup.json"
}

rate_flag=()
if ((rate > 0)); then
	rate_flag=(--rps "$rate")
fi

# --- the lean client --------------------------------------------------------
# What nginx's auth_request (examples/nginx/nginx.conf) and Caddy's
# forward_auth (examples/caddy/Caddyfile) send for the request the gRPC
# runs describe: the original method and URI in headers, the client's
# headers (the key among them), the client address as the proxy adds it.
nginx_headers=(-host api.example.com
	-H "X-Original-URI: /api/v1/assessments" -H "X-Original-Method: GET"
	-H "X-Real-IP: 10.1.2.3" -H "X-Forwarded-For: 10.1.2.3" -H "x-api-key: $key")
forward_headers=(-host api.example.com
	-H "X-Forwarded-Method: GET" -H "X-Forwarded-Uri: /api/v1/assessments"
	-H "X-Forwarded-Host: api.example.com" -H "X-Forwarded-Proto: https"
	-H "X-Forwarded-For: 10.1.2.3" -H "x-api-key: $key")

# lean_sent counts the requests the lean client sent Keygate (all valid
# keys, each run's first, checked request and warm-up included), for the
# check of Keygate's own decision counters at the end.
lean_sent=0
lean_run() { # server round pid grpc|http [lean flags...]
	local server=$1 round=$2 pid=$3 kind=$4
	shift 4
	alive "$pid" || die "$server is gone"
	${client_pin[@]+"${client_pin[@]}"} "$bin/lean" "$kind" -server "$server" -round "$round" -pid "$pid" -clk-tck "$clk_tck" \
		-n "$lean_requests" -w "$warmup" -c "$concurrency" -o "$work/lean.jsonl" "$@" &
	lean_pid=$!
	wait "$lean_pid"
	lean_pid=
	if [[ $server == keygate ]]; then
		lean_sent=$((lean_sent + lean_requests + warmup + 1))
	fi
}

if [[ -n ${mode[lean]:-} || -n ${mode[http]:-} ]]; then
	echo
	echo "lean runs (valid key; gRPC floor = allowall, HTTP floor = allowhttp):"
	grpc_request=$(request "$key")
	for ((round = 1; round <= rounds; round++)); do
		if [[ -n ${mode[lean]:-} ]]; then
			lean_run floor "$round" "$floor_pid" grpc -addr "$floor_addr" -request "$grpc_request"
			lean_run keygate "$round" "$kg_pid" grpc -addr "$kg_grpc" -request "$grpc_request"
		fi
		if [[ -n ${mode[http]:-} ]]; then
			lean_run floor "$round" "$hfloor_pid" http -addr "$hfloor_addr" -path /nginx "${nginx_headers[@]}"
			lean_run keygate "$round" "$kg_pid" http -addr "$kg_http" -path /nginx "${nginx_headers[@]}"
			lean_run floor "$round" "$hfloor_pid" http -addr "$hfloor_addr" -path /forward "${forward_headers[@]}"
			lean_run keygate "$round" "$kg_pid" http -addr "$kg_http" -path /forward "${forward_headers[@]}"
		fi
	done
fi

if [[ -n ${mode[ghz]:-} ]]; then
	echo
	echo "ghz runs (the second client; floor = allowall, always sent the valid-key request):"
	# Floor and Keygate alternate, so that both share whatever the load client
	# and the machine do at that moment.
	for ((round = 1; round <= rounds; round++)); do
		for v in "${variants[@]}"; do
			measure floor valid "$round" "$floor_addr" "$floor_pid"
			measure keygate "$v" "$round" "$kg_grpc" "$kg_pid"
		done
	done
fi

echo "load:     $(cut -d ' ' -f 1-3 /proc/loadavg) (1, 5, 15 min) after the runs"
rss_keygate=$(peak_rss_kb "$kg_pid")
rss_floor=$(peak_rss_kb "$floor_pid")
"$bin/report" get "$KEYGATE_ADMIN_URL/metrics" "$KEYGATE_ADMIN_TOKEN_FILE" >"$work/metrics.txt"

if [[ -s $work/lean.jsonl ]]; then
	echo
	"$bin/lean" summary "$work/lean.jsonl"
fi
echo
if [[ -n ${mode[ghz]:-} ]]; then
	echo "ghz (the second client):"
	"$bin/report" summary -runs "$work/runs.tsv" -rss-keygate "$rss_keygate" -rss-floor "$rss_floor" \
		-metrics "$work/metrics.txt" -warmup "$warmup" -rate "$rate" -extra-allowed "$lean_sent"
else
	echo "keygate peak RSS (VmHWM): $((rss_keygate / 1024)) MiB   (gRPC floor: $((rss_floor / 1024)) MiB)"
	"$bin/report" decisions -metrics "$work/metrics.txt" -allowed "$lean_sent"
fi
