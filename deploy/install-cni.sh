#!/bin/bash
# install-cni.sh: the sluice-node DaemonSet's init container (docs/deploy.md).
#
# Installs, in this order (the conflist goes last: its appearance is what makes the
# runtime, and so the kubelet, call the plugin):
#   1. the host interpreter bundle into /opt/sluice/python (unless SLUICE_CNI_INTERPRETER
#      names an interpreter the host already has, e.g. /usr/bin/python3);
#   2. the standard plugins Sluice delegates or chains to (host-local, portmap, loopback)
#      into the CNI bin dir, only where the node has none: the node's own copies win;
#   3. `python -m cni.install`: /opt/cni/bin/sluice and /etc/cni/net.d/10-sluice.conflist.
# Paths come from the controller configuration (the ConfigMap), parsed by the
# controller's own parser, so the shim, the conflist and the controller agree.
# Host paths are reached under $SLUICE_HOST_ROOT (the DaemonSet mounts them there).
set -euo pipefail

host=${SLUICE_HOST_ROOT:-/host}
config=${SLUICE_CONFIG:-/etc/sluice/controller.yaml}
plugins=${SLUICE_CNI_PLUGINS:-host-local portmap loopback}
plugin_src=${SLUICE_CNI_PLUGIN_SRC:-/usr/lib/cni}
bundle=${SLUICE_HOST_PYTHON_BUNDLE:-/opt/sluice/host-python}
interpreter=${SLUICE_CNI_INTERPRETER:-}
python=${SLUICE_PYTHON:-python3}
host_python=/opt/sluice/python          # where the bundle lives on the host

log() { echo "install-cni: $*" >&2; }

paths=$("$python" - "$config" <<'PY'
import sys

from controller.config import ConfigError, load

try:
    cni = load(sys.argv[1]).cni
except ConfigError as exc:
    sys.exit(f"install-cni: invalid configuration {sys.argv[1]}: {exc}")
for value in (cni.bin_dir, cni.conf_dir, cni.server_socket, cni.state_dir):
    if not value.startswith("/") or "\n" in value:
        sys.exit(f"install-cni: {value!r} is not an absolute path")
    print(value)
PY
)
mapfile -t cni <<<"$paths"
bin_dir=${cni[0]} conf_dir=${cni[1]} server_socket=${cni[2]} state_dir=${cni[3]}
for dir in "$bin_dir" "$conf_dir"; do
    [ -d "$host$dir" ] || { log "$host$dir is not mounted (hostPath $dir)"; exit 1; }
done

install_host_python() {
    local id target
    id=$(cat "$bundle/VERSION")
    target=$host$host_python-$id
    if [ ! -x "$target/bin/python3" ]; then
        rm -rf "$target.tmp"
        cp -a "$bundle" "$target.tmp"
        mv "$target.tmp" "$target"
    fi
    # why: a symlink swap is atomic; a shim starting meanwhile sees the old or the new.
    ln -sfn "${host_python##*/}-$id" "$host$host_python.tmp"
    mv -Tf "$host$host_python.tmp" "$host$host_python"
    for old in "$host$host_python"-*; do
        [ "$old" = "$target" ] || rm -rf "$old"
    done
    log "host interpreter $host_python -> ${host_python##*/}-$id"
}

if [ -z "$interpreter" ]; then
    install_host_python
    interpreter=$host_python/bin/python3
else
    log "using the host's own interpreter $interpreter"
fi

for plugin in $plugins; do
    if [ -e "$host$bin_dir/$plugin" ]; then
        log "$bin_dir/$plugin present: kept"
    else
        install -m 0755 "$plugin_src/$plugin" "$host$bin_dir/.$plugin.tmp"
        mv -f "$host$bin_dir/.$plugin.tmp" "$host$bin_dir/$plugin"
        log "installed $bin_dir/$plugin"
    fi
done

"$python" -m cni.install \
    --bin-dir "$host$bin_dir" \
    --conf-dir "$host$conf_dir" \
    --server-socket "$server_socket" \
    --state-dir "$state_dir" \
    --interpreter "$interpreter"
log "done: shim $bin_dir/sluice (interpreter $interpreter), server $server_socket, state $state_dir"
