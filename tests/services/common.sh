# Shared by the service scripts (sourced): whether a loopback port answers, waiting for a service
# just started, stopping one by its pid file, and installing Debian packages.

# port_open PORT: true when something listens on 127.0.0.1:PORT.
port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# wait_started NAME PORT PIDFILE LOG TENTHS: waits up to TENTHS × 0.1 s for PORT to answer;
# says where NAME runs, or shows the end of its LOG and fails.
wait_started() {
  local name="$1" port="$2" pidfile="$3" log="$4" tenths="$5"
  for _ in $(seq 1 "$tenths"); do
    if port_open "$port"; then
      echo "$name on 127.0.0.1:$port, pid $(cat "$pidfile"), log $log"
      return 0
    fi
    sleep 0.1
  done
  echo "$name did not start; its log:" >&2
  tail -20 "$log" >&2
  return 1
}

# stop_service PORT PIDFILE: kills the service and waits (5 s at most) until the port is free.
stop_service() {
  local port="$1" pidfile="$2"
  if [ -f "$pidfile" ]; then
    kill "$(cat "$pidfile")" 2>/dev/null || true
    rm -f "$pidfile"
    for _ in $(seq 1 50); do port_open "$port" || break; sleep 0.1; done
  fi
}

# service_status PORT: says whether something listens on 127.0.0.1:PORT; fails when not.
service_status() {
  if port_open "$1"; then echo "up on 127.0.0.1:$1"; else echo "down"; return 1; fi
}

# service_command CMD PORT PIDFILE: `stop` and `status` of a service started with a pid file,
# and the usage line for any other command (a script handles its own commands first).
service_command() {
  case "$1" in
    stop) stop_service "$2" "$3" ;;
    status) service_status "$2" ;;
    *)
      echo "usage: $0 install|start|stop|status" >&2
      exit 2
      ;;
  esac
}

# apt_install PACKAGE…: installs Debian packages, as root or with sudo.
apt_install() {
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null; fi
}
