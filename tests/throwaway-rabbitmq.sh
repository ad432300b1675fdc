#!/bin/sh
# A private rabbitmq-server node for `make run`, as tests/harness.py runs
# one: started directly (the /usr/sbin wrapper drops RABBITMQ_* variables),
# with its data, logs, cookie and ports under DIR.
#   throwaway-rabbitmq.sh start DIR   prints the node's amqp:// URL once it is up
#   throwaway-rabbitmq.sh stop DIR    stops it
set -eu
cmd=$1 dir=$(realpath -m "$2")
bin=/usr/lib/rabbitmq/bin

free_port() {
	/usr/bin/python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

if [ "$cmd" = start ]; then
	rm -rf "$dir"
	mkdir -p "$dir"
	echo '[].' > "$dir/enabled_plugins"
	printf ferryruncookie > "$dir/.erlang.cookie"
	chmod 400 "$dir/.erlang.cookie"
	# A node name of its own, so that two trees' `make run` can run at once.
	echo "$(free_port) $(free_port) ferryrun$$@localhost" > "$dir/node"
fi
read -r port dist node < "$dir/node"
# ERL_CRASH_DUMP: a node that fails to start leaves its dump here, not in
# the caller's directory.
export ERL_CRASH_DUMP="$dir/erl_crash.dump" HOME="$dir" RABBITMQ_NODENAME=$node RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
	RABBITMQ_NODE_PORT="$port" RABBITMQ_DIST_PORT="$dist" RABBITMQ_MNESIA_BASE="$dir/mnesia" \
	RABBITMQ_LOG_BASE="$dir/log" RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
	RABBITMQ_CONFIG_FILE="$dir/rabbitmq" RABBITMQ_PID_FILE="$dir/rabbit.pid"

case $cmd in
start)
	setsid $bin/rabbitmq-server > "$dir/server.out" 2>&1 < /dev/null &
	echo $! > "$dir/server.pid"
	# await_startup fails at once while the node has not registered yet;
	# asked again until it answers, or the server is gone.
	until $bin/rabbitmqctl -n $node -q await_startup --timeout 60 > "$dir/await.out" 2>&1; do
		if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
			echo "throwaway-rabbitmq: rabbitmq-server exited; see $dir/server.out" >&2
			exit 1
		fi
		sleep 0.5
	done
	echo "amqp://guest:guest@127.0.0.1:$port/"
	;;
stop)
	$bin/rabbitmqctl -n $node -q stop > /dev/null 2>&1 || kill "$(cat "$dir/server.pid")" 2>/dev/null || true
	;;
esac
